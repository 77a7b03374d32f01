"""Session cache: layout, unique patch numbers across processes and restarts, pruning."""

from __future__ import annotations

import os
import re
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from capture.store import CrateKey
from daemon.build.errors import SessionCacheError
from daemon.build.session_cache import (
    SessionLayout,
    default_session_root,
    normalize_os,
    open_session,
    patch_library_filename,
    patch_number_of,
    prune_patches,
    reserve_patch_number,
)


def test_layout_paths_are_pure(tmp_path):
    layout = SessionLayout(tmp_path / "s")
    assert layout.object_path("my-crate", "bin") == tmp_path / "s" / "objects" / "bin" / "my_crate.o"
    assert layout.object_path("my-crate", "lib") != layout.object_path("my-crate", "bin")
    assert layout.incremental_dir("my-crate", "lib") == tmp_path / "s" / "incremental" / "my_crate.lib"
    assert layout.metadata_path("greet", "-5c25") == tmp_path / "s" / "deps" / "libgreet-5c25.rmeta"
    assert layout.patch_library_path("my-app", 7, "linux") == tmp_path / "s" / "patches" / "libmy_app-patch-7.so"
    assert not (tmp_path / "s").exists()
    assert default_session_root(Path("/t/thinpatch"), "host-debug") == Path("/t/thinpatch/sessions/host-debug")


@pytest.mark.parametrize(
    "os_name, expected",
    [("linux", "libapp-patch-3.so"), ("android", "libapp-patch-3.so"), ("macos", "libapp-patch-3.dylib"),
     ("darwin", "libapp-patch-3.dylib"), ("ios", "libapp-patch-3.dylib"), ("windows", "app-patch-3.dll")],
)
def test_patch_library_names(os_name, expected):
    assert patch_library_filename("app", 3, os_name) == expected
    assert patch_number_of(expected) == 3


def test_unknown_os():
    with pytest.raises(ValueError, match="unsupported OS"):
        normalize_os("beos")


def test_open_session_makes_private_dirs(tmp_path):
    layout = open_session(tmp_path / "s")
    for d in (layout.root, layout.deps_dir, layout.patches_dir, layout.out_dir):
        assert stat.S_IMODE(d.stat().st_mode) == 0o700


def test_numbers_grow_and_survive_a_new_layout_object(tmp_path):
    layout = open_session(tmp_path / "s")
    assert [reserve_patch_number(layout) for _ in range(3)] == [1, 2, 3]
    # a restarted process builds a fresh layout object from the same directory
    assert reserve_patch_number(SessionLayout(tmp_path / "s")) == 4
    assert stat.S_IMODE(layout.counter_path.stat().st_mode) == 0o600


def test_numbers_never_reused_even_after_pruning_everything(tmp_path):
    layout = open_session(tmp_path / "s")
    for _ in range(5):
        n = reserve_patch_number(layout)
        layout.patch_library_path("app", n, "linux").write_bytes(b"x")
    prune_patches(layout, keep=0)
    assert list(layout.patches_dir.iterdir()) == []
    assert reserve_patch_number(layout) == 6


def test_existing_libraries_are_a_floor_when_the_counter_is_lost(tmp_path):
    layout = open_session(tmp_path / "s")
    layout.patch_library_path("app", 41, "linux").write_bytes(b"x")
    assert reserve_patch_number(layout) == 42
    layout.counter_path.write_text("garbage")
    assert reserve_patch_number(layout) == 42  # 41 is the largest library, 42 was never written


_RESERVE = """
import sys
from pathlib import Path
from daemon.build.session_cache import SessionLayout, reserve_patch_number
layout = SessionLayout(Path(sys.argv[1]))
print(" ".join(str(reserve_patch_number(layout)) for _ in range(25)))
"""


def test_concurrent_processes_get_distinct_numbers(tmp_path):
    open_session(tmp_path / "s")
    procs = [
        subprocess.Popen([sys.executable, "-c", _RESERVE, str(tmp_path / "s")], stdout=subprocess.PIPE, text=True)
        for _ in range(4)
    ]
    numbers = [int(n) for p in procs for n in p.communicate(timeout=60)[0].split()]
    assert all(p.returncode == 0 for p in procs)
    assert sorted(numbers) == list(range(1, 101))


def test_prune_keeps_the_newest_and_their_sidecars(tmp_path):
    layout = open_session(tmp_path / "s")
    for n in range(1, 21):
        lib = layout.patch_library_path("app", n, "linux")
        lib.write_bytes(b"x")
        lib.with_suffix(".json").write_text("{}")  # e.g. a jump table beside the library
    (layout.patches_dir / "unrelated.txt").write_text("keep me")
    removed = prune_patches(layout, keep=16)
    assert len(removed) == 8
    left = sorted(p.name for p in layout.patches_dir.iterdir())
    assert left[-1] == "unrelated.txt"
    numbers = sorted({patch_number_of(n.replace(".json", ".so")) for n in left if n != "unrelated.txt"})
    assert numbers == list(range(5, 21))
    assert prune_patches(layout, keep=16) == []


def test_library_names_carry_the_session_tag_and_a_recreated_session_gets_a_new_one(tmp_path):
    from daemon.build.session_cache import session_tag

    layout = open_session(tmp_path / "s")
    tag = session_tag(layout)
    assert re.fullmatch(r"[0-9a-f]{8}", tag) and session_tag(layout) == tag
    first = layout.patch_library_path("my-app", reserve_patch_number(layout), "linux", tag)
    assert first.name == f"libmy_app-{tag}-patch-1.so" and patch_number_of(first.name) == 1

    shutil.rmtree(layout.root)  # deleted mid-session: the count restarts, the name must not repeat
    layout = open_session(tmp_path / "s")
    again = layout.patch_library_path("my-app", reserve_patch_number(layout), "linux", session_tag(layout))
    assert patch_number_of(again.name) == 1 and again != first


def test_edited_crates_are_remembered_per_program_and_forgotten_by_a_new_capture(tmp_path):
    from daemon.build.session_cache import read_edited_crates, record_edited_crates

    layout = open_session(tmp_path / "s")
    assert read_edited_crates(layout, CrateKey("app", "bin"), 10.0) == set()
    record_edited_crates(layout, CrateKey("app", "bin"), 10.0, {CrateKey("lib", "lib"), CrateKey("app", "bin")})
    record_edited_crates(layout, CrateKey("tool", "bin"), 11.0, {CrateKey("tool", "bin")})
    assert read_edited_crates(layout, CrateKey("app", "bin"), 10.0) == {CrateKey("lib", "lib"), CrateKey("app", "bin")}
    assert read_edited_crates(layout, CrateKey("tool", "bin"), 11.0) == {CrateKey("tool", "bin")}
    assert read_edited_crates(layout, CrateKey("app", "bin"), 12.0) == set()  # captured again since
    layout.edited_path.write_text("{not json")
    assert read_edited_crates(layout, CrateKey("app", "bin"), 10.0) == set()


# --------------------------------------------------------------------------- trust, on every open


@pytest.mark.parametrize("subdir", ["patches", "deps", "out", "objects", "incremental", "depinfo"])
def test_every_session_subdirectory_is_checked_each_time_it_is_opened(tmp_path, subdir):
    open_session(tmp_path / "s")  # the first open made them; a link put in later is refused
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (tmp_path / "s" / subdir).rmdir()
    (tmp_path / "s" / subdir).symlink_to(elsewhere)
    with pytest.raises(SessionCacheError, match=rf"{tmp_path / 's' / subdir}: it is a symbolic link"):
        open_session(tmp_path / "s")
    assert list(elsewhere.iterdir()) == []


def test_a_linked_session_root_is_refused_not_followed(tmp_path):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (tmp_path / "s").symlink_to(elsewhere)
    with pytest.raises(SessionCacheError, match=r"cannot use the session cache .*symbolic link.*rm "):
        open_session(tmp_path / "s")
    assert list(elsewhere.iterdir()) == []


def test_a_session_directory_open_to_others_is_refused_and_keeps_its_mode(tmp_path):
    open_session(tmp_path / "s")
    os.chmod(tmp_path / "s" / "patches", 0o777)
    with pytest.raises(SessionCacheError, match=r"writable by other users \(mode 0777\)\. Run `chmod 700 "):
        open_session(tmp_path / "s")
    assert stat.S_IMODE(os.stat(tmp_path / "s" / "patches").st_mode) == 0o777


def test_the_counter_is_never_written_through_a_link(tmp_path):
    layout = open_session(tmp_path / "s")
    victim = tmp_path / "victim"
    victim.write_text("precious\n")
    layout.counter_path.symlink_to(victim)
    os.symlink(victim, layout.lock_path)
    with pytest.raises(OSError, match="symbolic link"):
        reserve_patch_number(layout)
    layout.lock_path.unlink()
    assert reserve_patch_number(layout) == 1  # the counter link is replaced, not written through
    assert victim.read_text() == "precious\n"
