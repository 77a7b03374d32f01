"""Build IDs: read from real binaries (checked against readelf) and from synthetic notes."""

from __future__ import annotations

import os
import re
import shutil
import struct
import subprocess
import sys
from pathlib import Path

import pytest

from daemon.binary.build_id import parse_notes, process_build_id, process_executable, read_build_id
from tests.support.symbol_images import build_images


def readelf_build_id(path: Path) -> str | None:
    out = subprocess.run(["readelf", "-n", str(path)], capture_output=True, text=True, check=True).stdout
    match = re.search(r"Build ID: ([0-9a-f]+)", out)
    return match.group(1) if match else None


needs_readelf = pytest.mark.skipif(shutil.which("readelf") is None, reason="needs binutils' readelf")


@needs_readelf
def test_a_rustc_built_program_has_the_build_id_readelf_shows() -> None:
    host = build_images().host
    expected = readelf_build_id(host)
    assert expected, "the linker gave the program no build ID"
    assert read_build_id(host) == expected


@needs_readelf
def test_stripping_the_section_table_keeps_the_build_id(tmp_path: Path) -> None:
    stripped = tmp_path / "stripped"
    shutil.copy(build_images().host, stripped)
    subprocess.run(["strip", "--strip-section-headers", str(stripped)], check=False, capture_output=True)
    subprocess.run(["strip", str(stripped)], check=True)
    assert read_build_id(stripped) == readelf_build_id(build_images().host)


@pytest.mark.skipif(not Path("/proc/self/exe").exists(), reason="Linux /proc")
def test_a_running_process_is_identified_by_its_binary() -> None:
    own = read_build_id(os.path.realpath(sys.executable))
    assert process_build_id(os.getpid()) == own
    assert process_executable(os.getpid()) == os.path.realpath(sys.executable)


@pytest.mark.skipif(not Path("/proc/self/exe").exists(), reason="Linux /proc")
def test_a_replaced_binary_still_answers_for_the_old_inode(tmp_path: Path) -> None:
    """A running program keeps its inode when `cargo build` writes a new file at its path."""
    program = tmp_path / "sleeper"
    shutil.copy("/bin/sleep", program)
    before = read_build_id(program)
    process = subprocess.Popen([str(program), "30"])
    try:
        program.unlink()
        program.write_bytes(b"not the same program")
        assert process_build_id(process.pid) == before
        assert process_executable(process.pid) == str(program)
    finally:
        process.kill()
        process.wait()


def note(name: bytes, kind: int, desc: bytes) -> bytes:
    pad = lambda b: b + b"\0" * (-len(b) % 4)  # noqa: E731
    return struct.pack("<III", len(name), len(desc), kind) + pad(name) + pad(desc)


def test_the_gnu_build_id_is_picked_among_other_notes() -> None:
    data = note(b"GNU\0", 1, b"\0" * 16) + note(b"stapsdt\0", 3, b"x" * 5) + note(b"GNU\0", 3, bytes(range(20)))
    assert parse_notes(data, little=True) == bytes(range(20)).hex()


def test_truncated_or_missing_notes_give_none(tmp_path: Path) -> None:
    whole = note(b"GNU\0", 3, bytes(range(20)))
    assert parse_notes(whole[:-4], little=True) is None
    assert parse_notes(b"", little=True) is None
    text = tmp_path / "script.sh"
    text.write_text("#!/bin/sh\n")
    assert read_build_id(text) is None
    assert read_build_id(tmp_path / "missing") is None


def test_a_macho_binary_is_identified_by_its_uuid(tmp_path: Path) -> None:
    uuid = bytes(range(16, 32))
    segment = struct.pack("<II", 0x19, 72) + b"\0" * 64  # LC_SEGMENT_64, skipped
    lc_uuid = struct.pack("<II", 0x1B, 24) + uuid
    header = struct.pack("<IiiIIIII", 0xFEEDFACF, 0x01000007, 3, 2, 2, len(segment) + len(lc_uuid), 0, 0)
    path = tmp_path / "app"
    path.write_bytes(header + segment + lc_uuid)
    assert read_build_id(path) == uuid.hex()
