"""thinpatch's own directories are walked with directory descriptors and O_NOFOLLOW: a link,
someone else's directory or one others can write is refused before anything is written, and
an existing directory's mode is never changed."""

from __future__ import annotations

import errno
import json
import os
import stat
from pathlib import Path

import pytest

from capture import private_fs, store
from capture.trust import UntrustedPath


def mode_of(path: Path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_missing_directories_are_made_private(tmp_path):
    store.ensure_private_dir(tmp_path / "a" / "b" / "c", within=tmp_path)
    for part in ("a", "a/b", "a/b/c"):
        assert stat.S_ISDIR(os.lstat(tmp_path / part).st_mode) and mode_of(tmp_path / part) & 0o077 == 0


@pytest.mark.parametrize("where", ["thinpatch", "thinpatch/captures"])
def test_a_link_anywhere_below_the_trusted_directory_is_refused(tmp_path, where):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    target = tmp_path / "target"
    (target / where).parent.mkdir(parents=True, exist_ok=True)
    (target / where).symlink_to(elsewhere)
    record = target / "thinpatch" / "captures" / "host-debug" / "rustc" / "app.bin.json"
    with pytest.raises(UntrustedPath, match=rf"{target / where}: it is a symbolic link .*rm "):
        store.write_json_atomic(record, {"x": 1}, within=target)
    assert list(elsewhere.iterdir()) == []


def test_the_file_itself_is_never_written_through_a_link(tmp_path):
    victim = tmp_path / "victim"
    victim.write_text("precious\n")
    (tmp_path / "capture.log").symlink_to(victim)
    with pytest.raises(UntrustedPath, match="symbolic link"):
        private_fs.open_file(tmp_path / "capture.log", os.O_WRONLY | os.O_APPEND | os.O_CREAT, tmp_path)
    # an atomic write replaces the link itself, never its target
    store.write_json_atomic(tmp_path / "capture.log", {"a": 1}, within=tmp_path)
    assert victim.read_text() == "precious\n"
    assert json.loads((tmp_path / "capture.log").read_text()) == {"a": 1}


def test_the_log_and_lock_are_not_written_through_links(tmp_path, monkeypatch):
    monkeypatch.setenv(store.ENV_STATE_DIR, str(tmp_path / "state"))
    root = tmp_path / "target" / "thinpatch"
    root.mkdir(parents=True)
    victim = tmp_path / "victim"
    victim.write_text("precious\n")
    store.log_path(root).symlink_to(victim)
    store.capture_lock_path(root).symlink_to(tmp_path / "made-by-the-lock")
    store.log_warning(root, "something happened")
    assert victim.read_text() == "precious\n"
    assert "something happened" in (tmp_path / "state" / store.LOG_NAME).read_text()  # the fallback log
    with pytest.raises(UntrustedPath, match="symbolic link"):
        store.open_capture_lock(root)
    assert not (tmp_path / "made-by-the-lock").exists()


def test_an_existing_directory_open_to_others_is_refused_and_left_as_it_is(tmp_path):
    shared = tmp_path / "target" / "thinpatch"
    shared.mkdir(parents=True)
    os.chmod(shared, 0o1777)
    with pytest.raises(UntrustedPath, match=rf"writable by other users \(mode 1777\)\. Run `chmod 700 {shared}`"):
        store.ensure_private_dir(shared / "captures", within=shared.parent)
    assert mode_of(shared) == 0o1777 and not (shared / "captures").exists()


def test_an_existing_private_directory_keeps_its_mode(tmp_path):
    mine = tmp_path / "mine"
    mine.mkdir(mode=0o750)
    os.chmod(mine, 0o750)
    store.ensure_private_dir(mine)
    assert mode_of(mine) == 0o750


def test_an_untrusted_starting_directory_is_refused_before_any_write(tmp_path):
    base = tmp_path / "open"
    base.mkdir()
    os.chmod(base, 0o777)
    with pytest.raises(UntrustedPath, match="writable by other users"):
        store.write_json_atomic(base / "thinpatch" / "x.json", {}, within=base)
    assert list(base.iterdir()) == []


def test_a_path_outside_the_trusted_directory_is_a_mistake(tmp_path):
    with pytest.raises(ValueError, match="is not inside"):
        private_fs.open_dir(tmp_path / "a", within=tmp_path / "b")


def test_session_subdirectories_are_checked_in_one_walk(tmp_path):
    private_fs.make_subdirs(tmp_path / "s", ("out", "deps"), within=tmp_path)
    assert sorted(p.name for p in (tmp_path / "s").iterdir()) == ["deps", "out"]
    (tmp_path / "s" / "deps").rmdir()
    (tmp_path / "s" / "deps").symlink_to(tmp_path)
    with pytest.raises(UntrustedPath, match=r"s/deps: it is a symbolic link"):
        private_fs.make_subdirs(tmp_path / "s", ("out", "deps"), within=tmp_path)


def test_a_full_disk_is_said_in_plain_words():
    exc = OSError(errno.ENOSPC, "No space left on device", "/t/x")
    assert private_fs.describe_os_error(exc) == "the disk is full (/t/x): free some space and run the command again"
