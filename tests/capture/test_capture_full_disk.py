"""`thinpatch capture` on a full disk: the last good capture stays whole and usable (records
non-empty and readable, the captured program in place) and the summary says the disk is full.
The last good records are set aside as hard links, which need no room."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from capture import store
from daemon.cli.capture_run import keep_last_good, restore_last_good, run_capture
from tests.conftest import copy_fixture

pytestmark = pytest.mark.cargo


@pytest.fixture
def small_disk(tmp_path):
    """A 64 MiB tmpfs (mounting needs root, as in CI)."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    mount = tmp_path / "small"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64m", "tmpfs", str(mount)], capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"no tmpfs here: {done.stderr.decode().strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def fill(directory: Path) -> None:
    """Take every block left on ``directory``'s file system."""
    fd = os.open(directory / "filler", os.O_WRONLY | os.O_CREAT)
    try:
        while os.write(fd, b"\0" * (1 << 16)):
            pass
    except OSError:
        pass
    finally:
        os.close(fd)


def files_of(capture_root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(capture_root)): p.read_bytes()
        for sub in ("captures", "last-good")
        for p in (capture_root / sub).rglob("*")
        if p.is_file()
    }


def test_a_capture_on_a_full_disk_keeps_the_last_good_one_whole(small_disk, capture_state_dir):
    ws = copy_fixture("single_bin", small_disk)
    good = run_capture(ws)
    assert good.ok, good
    root = good.capture_root
    before = files_of(root)
    [link] = good.captures.links.values()
    program = Path(link.output)
    program_bytes = program.read_bytes()

    fill(small_disk)
    failed = run_capture(ws)

    assert not failed.ok and failed.captured == []
    assert files_of(root) == before  # nothing emptied, nothing left half-copied in last-good/
    assert all(data for data in before.values())
    assert not (root / "last-good").exists() or not any((root / "last-good").rglob("*.json"))
    assert program.read_bytes() == program_bytes
    reread = store.load_captures(root, good.scope)
    assert reread.warnings == [] and set(reread.rustc) == set(good.captures.rustc)
    assert any("is full" in w and "free some space" in w for w in failed.warnings), failed.warnings

    os.unlink(small_disk / "filler")  # room again: the next capture works
    assert run_capture(ws).ok


def test_a_program_the_failed_build_deleted_is_put_back(tmp_path, capture_state_dir):
    """A link that runs out of room deletes its output (ld does, when the disk fills mid-link):
    the program the last good capture names is linked back from the set-aside copy."""
    good = run_capture(copy_fixture("single_bin", tmp_path))
    root, scope = good.capture_root, good.scope
    [link] = good.captures.links.values()
    program = Path(link.output)
    program_bytes = program.read_bytes()
    records = files_of(root)

    backup = keep_last_good(root, scope)
    assert backup is not None
    os.unlink(program)  # what the failed link did
    record = root / "captures" / scope / "rustc" / "single_bin.bin.json"
    (record.parent / "new").write_text("{half a record")
    os.replace(record.parent / "new", record)  # as the shim writes: a rename over the old one
    restore_last_good(root, scope, backup)

    assert program.read_bytes() == program_bytes
    assert files_of(root) == records and not backup.exists()


def test_a_linked_last_good_directory_is_refused_before_anything_is_removed(tmp_path, capture_state_dir):
    good = run_capture(copy_fixture("single_bin", tmp_path / "ws"))
    elsewhere = tmp_path / "elsewhere"
    (elsewhere / good.scope).mkdir(parents=True)
    (elsewhere / good.scope / "keep.txt").write_text("not thinpatch's\n")
    (good.capture_root / "last-good").rmdir()  # empty after a good capture
    (good.capture_root / "last-good").symlink_to(elsewhere)
    with pytest.raises(OSError, match="symbolic link"):
        keep_last_good(good.capture_root, good.scope)
    assert (elsewhere / good.scope / "keep.txt").read_text() == "not thinpatch's\n"


def test_a_capture_killed_mid_build_leaves_the_last_good_one_for_the_next(tmp_path, capture_state_dir):
    """A capture killed before it could restore or discard (SIGKILL, power loss) leaves its
    half-written records in captures/ and the set aside ones in last-good/: the next capture
    starts from the set aside ones, so a failure then still leaves the last good capture."""
    good = run_capture(copy_fixture("single_bin", tmp_path))
    root, scope = good.capture_root, good.scope
    records = {k: v for k, v in files_of(root).items() if k.startswith("captures/")}

    assert keep_last_good(root, scope) is not None  # the killed capture got this far
    record = root / "captures" / scope / "rustc" / "single_bin.bin.json"
    (record.parent / "new").write_text("{half a record")
    os.replace(record.parent / "new", record)  # as the shim writes: a rename over the old one

    backup = keep_last_good(root, scope)  # the next capture
    assert backup is not None
    restore_last_good(root, scope, backup)  # ... and its build failed
    assert {k: v for k, v in files_of(root).items() if k.startswith("captures/")} == records


@pytest.mark.asyncio
async def test_an_early_build_on_a_full_disk_keeps_the_program_and_the_last_good_capture(small_disk, capture_state_dir):
    """A held build (`thinpatch run`'s early build) that goes ahead on a full disk: cargo had
    removed the program before the verdict; the build fails, and the program (the very file)
    and the capture are as they were."""
    from daemon.cli.capture_run import BuildHold, capture_workspace

    ws = copy_fixture("single_bin", small_disk)
    good = await capture_workspace(ws)
    assert good.ok, good
    root = good.capture_root
    before = files_of(root)
    [link] = good.captures.links.values()
    program = Path(link.output)
    program_bytes, program_inode = program.read_bytes(), program.stat().st_ino

    fill(small_disk)
    hold = BuildHold()
    hold.go()
    failed = await capture_workspace(ws, known=good.info, hold=hold)
    assert not failed.ok and failed.captured == []
    assert files_of(root) == before
    assert program.read_bytes() == program_bytes and program.stat().st_ino == program_inode
    assert not any((root / "held").rglob("*"))


@pytest.mark.asyncio
async def test_an_early_build_that_cannot_set_the_program_aside_does_not_start(
    tmp_path, capture_state_dir, monkeypatch
):
    """cargo would remove the program before the verdict: if it can't be linked aside (here
    the link fails as on a full disk), the held build refuses to start cargo at all."""
    import errno

    from daemon.cli import capture_run

    ws = copy_fixture("single_bin", tmp_path)
    good = await capture_run.capture_workspace(ws)
    before = files_of(good.capture_root)
    [link] = good.captures.links.values()
    program_inode = Path(link.output).stat().st_ino

    def no_room(capture_root, scope):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(capture_run, "hold_programs", no_room)
    hold = capture_run.BuildHold()
    hold.go()
    with pytest.raises(capture_run.CaptureError, match="cannot set the program aside before an early build"):
        await capture_run.capture_workspace(ws, known=good.info, hold=hold)
    assert files_of(good.capture_root) == before
    assert Path(link.output).stat().st_ino == program_inode
