"""A binary's build ID: the linker's content hash that names one exact build of a program.

ELF: the ``NT_GNU_BUILD_ID`` note (``-Wl,--build-id``), as lowercase hex, the form
``readelf -n`` and ``file`` print. Mach-O: the ``LC_UUID`` load command, as 32 hex digits.
Two processes run the same code exactly when their binaries' build IDs are equal, so a
patch built against one binary is only ever sent to processes of that build ID.
"""

from __future__ import annotations

import os
import struct
from typing import BinaryIO

ELF_MAGIC = b"\x7fELF"
MACHO_MAGIC_64 = 0xFEEDFACF
NT_GNU_BUILD_ID = 3
PT_NOTE = 4
SHT_NOTE = 7
LC_UUID = 0x1B
MAX_NOTE_BYTES = 1 << 16  # build-id notes are 20-40 bytes; anything huge is not one


def read_build_id(path: str | os.PathLike[str]) -> str | None:
    """The build ID of the binary at ``path``, or None when it has none or is not a binary."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(64)
            if head[:4] == ELF_MAGIC:
                return _elf_build_id(fh, head)
            if len(head) >= 4 and struct.unpack("<I", head[:4])[0] == MACHO_MAGIC_64:
                return _macho_uuid(fh, head)
    except (OSError, struct.error, ValueError):
        return None
    return None


def process_build_id(pid: int) -> str | None:
    """The build ID of the binary process ``pid`` runs (Linux: through /proc/PID/exe, which
    still opens the original file after it was replaced or deleted on disk)."""
    return read_build_id(f"/proc/{pid}/exe")


def process_executable(pid: int) -> str | None:
    """The path process ``pid`` was started from, without the kernel's " (deleted)" mark."""
    try:
        path = os.readlink(f"/proc/{pid}/exe")
    except OSError:
        return None
    return path.removesuffix(" (deleted)")


def parse_notes(data: bytes, little: bool) -> str | None:
    """The GNU build ID among the ELF notes in ``data`` (pure)."""
    order = "<" if little else ">"
    offset = 0
    while offset + 12 <= len(data):
        namesz, descsz, kind = struct.unpack_from(order + "III", data, offset)
        name_start = offset + 12
        desc_start = name_start + _align4(namesz)
        desc_end = desc_start + descsz
        if desc_end > len(data):
            return None
        if kind == NT_GNU_BUILD_ID and data[name_start : name_start + namesz].rstrip(b"\0") == b"GNU":
            return data[desc_start:desc_end].hex() or None
        offset = desc_start + _align4(descsz)
    return None


def _align4(n: int) -> int:
    return (n + 3) & ~3


def _elf_build_id(fh: BinaryIO, head: bytes) -> str | None:
    is64 = head[4] == 2
    little = head[5] == 1
    order = "<" if little else ">"
    if is64:
        phoff, shoff = struct.unpack_from(order + "QQ", head, 0x20)
        phentsize, phnum, shentsize, shnum = struct.unpack_from(order + "HHHH", head, 0x36)
    else:
        phoff, shoff = struct.unpack_from(order + "II", head, 0x1C)
        phentsize, phnum, shentsize, shnum = struct.unpack_from(order + "HHHH", head, 0x2A)
    # Program headers first: they survive `strip` of the section table.
    for i in range(phnum):
        fh.seek(phoff + i * phentsize)
        entry = fh.read(phentsize)
        if is64:
            p_type, _flags, p_offset, _vaddr, _paddr, p_filesz = struct.unpack_from(order + "IIQQQQ", entry)
        else:
            p_type, p_offset, _vaddr, _paddr, p_filesz = struct.unpack_from(order + "IIIII", entry)
        if p_type == PT_NOTE and p_filesz <= MAX_NOTE_BYTES:
            fh.seek(p_offset)
            found = parse_notes(fh.read(p_filesz), little)
            if found:
                return found
    for i in range(shnum):
        fh.seek(shoff + i * shentsize)
        entry = fh.read(shentsize)
        if is64:
            _name, sh_type, _flags, _addr, sh_offset, sh_size = struct.unpack_from(order + "IIQQQQ", entry)
        else:
            _name, sh_type, _flags, _addr, sh_offset, sh_size = struct.unpack_from(order + "IIIIII", entry)
        if sh_type == SHT_NOTE and sh_size <= MAX_NOTE_BYTES:
            fh.seek(sh_offset)
            found = parse_notes(fh.read(sh_size), little)
            if found:
                return found
    return None


def _macho_uuid(fh: BinaryIO, head: bytes) -> str | None:
    ncmds, sizeofcmds = struct.unpack_from("<II", head, 16)
    fh.seek(32)  # mach_header_64
    commands = fh.read(min(sizeofcmds, 1 << 20))
    offset = 0
    for _ in range(ncmds):
        if offset + 8 > len(commands):
            return None
        cmd, cmdsize = struct.unpack_from("<II", commands, offset)
        if cmd == LC_UUID and cmdsize >= 24:
            return commands[offset + 8 : offset + 24].hex()
        if cmdsize < 8:
            return None
        offset += cmdsize
    return None
