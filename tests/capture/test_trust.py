"""The one trust rule: owner, mode, and every directory above, as every reader applies it."""

from __future__ import annotations

import json
import os
import pwd
from pathlib import Path

import pytest

from capture import store
from capture.store import CrateKey
from capture.trust import UntrustedPath, require_trusted, untrusted_reason
from daemon.service.workspaces import NoCapture, find_captured_workspace, registered_workspaces, search_directories

is_root = os.geteuid() == 0
needs_root = pytest.mark.skipif(not is_root, reason="giving files to another uid needs root")


def nobody_uid() -> int:
    return pwd.getpwnam("nobody").pw_uid


def private_dir(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    os.chmod(path, 0o700)
    return path


def test_own_private_file_is_trusted(tmp_path):
    os.chmod(tmp_path, 0o700)
    f = tmp_path / "r.json"
    f.write_text("{}")
    os.chmod(f, 0o600)
    assert untrusted_reason(f) is None
    require_trusted(f)


@pytest.mark.parametrize("mode", [0o602, 0o666])
def test_file_writable_by_others_is_refused(tmp_path, mode):
    os.chmod(tmp_path, 0o700)
    f = tmp_path / "r.json"
    f.write_text("{}")
    os.chmod(f, mode)
    assert "writable by other users" in untrusted_reason(f)
    with pytest.raises(UntrustedPath) as info:
        require_trusted(f)
    assert str(f) in str(info.value) and "remove it" in str(info.value)


@needs_root
def test_group_write_is_refused_unless_the_group_is_the_users_own(tmp_path):
    import grp

    os.chmod(tmp_path, 0o700)
    f = tmp_path / "r.json"
    f.write_text("{}")
    os.chmod(f, 0o620)
    os.chown(f, -1, grp.getgrnam("nogroup").gr_gid if _has_group("nogroup") else pwd.getpwnam("nobody").pw_gid)
    assert "writable by other users" in untrusted_reason(f)
    # root's own group, with no other member: a umask-002 setup, where group write is the user's.
    os.chown(f, -1, 0)
    if not grp.getgrgid(0).gr_mem and not any(u.pw_gid == 0 and u.pw_uid != 0 for u in pwd.getpwall()):
        assert untrusted_reason(f) is None


def _has_group(name: str) -> bool:
    import grp

    try:
        grp.getgrnam(name)
        return True
    except KeyError:
        return False


def test_directory_above_writable_by_others_is_refused(tmp_path):
    shared = tmp_path / "shared"
    shared.mkdir()
    os.chmod(shared, 0o777)  # not sticky: anyone could rename what is inside
    mine = private_dir(shared / "mine")
    os.chmod(tmp_path, 0o755)
    reason = untrusted_reason(mine)
    # Our own 0700 dir stops the walk only when it is above; here `mine` is the item itself.
    assert reason is not None and str(shared) in reason and "writable by other users" in reason


def test_sticky_directory_above_is_fine_for_what_we_own(tmp_path):
    sticky = tmp_path / "tmpdir"
    sticky.mkdir()
    os.chmod(sticky, 0o1777)
    os.chmod(tmp_path, 0o755)
    mine = private_dir(sticky / "mine")
    assert untrusted_reason(mine) is None


def test_walk_stops_at_a_private_directory_of_ours(tmp_path):
    shared = tmp_path / "shared"
    shared.mkdir()
    os.chmod(shared, 0o777)
    home = private_dir(shared / "home")
    f = home / "x"
    f.write_text("")
    os.chmod(f, 0o600)
    # `home` is ours and private: nobody else can change what is below it.
    assert untrusted_reason(f) is None


def test_symlink_is_judged_by_its_target(tmp_path):
    os.chmod(tmp_path, 0o700)
    target = tmp_path / "t"
    target.write_text("")
    os.chmod(target, 0o666)
    link = tmp_path / "l"
    link.symlink_to(target)
    assert "writable by other users" in untrusted_reason(link)


def test_missing_path_is_not_trusted(tmp_path):
    assert "can't be read" in untrusted_reason(tmp_path / "nope")


@needs_root
def test_owned_by_another_user_is_refused(tmp_path):
    os.chmod(tmp_path, 0o755)
    f = tmp_path / "r.json"
    f.write_text("{}")
    os.chown(f, nobody_uid(), -1)
    assert f"belongs to uid {nobody_uid()}" in untrusted_reason(f)


@needs_root
def test_directory_above_owned_by_another_user_is_refused(tmp_path):
    os.chmod(tmp_path, 0o755)
    theirs = tmp_path / "theirs"
    theirs.mkdir(mode=0o755)
    os.chown(theirs, nobody_uid(), -1)
    mine = theirs / "mine"
    mine.mkdir(mode=0o700)
    assert f"{theirs}, a directory above it, belongs to uid {nobody_uid()}" in untrusted_reason(mine)


# --------------------------------------------------------------------------- readers


def write_capture(workspace: Path, rustc: str = "/usr/bin/rustc") -> Path:
    root = workspace / "target" / "thinpatch"
    store.write_json_atomic(
        store.rustc_record_path(root, "host-debug", CrateKey("app", "bin")),
        {
            "format": store.FORMAT_VERSION,
            "crate_name": "app",
            "kind": "bin",
            "crate_types": ["bin"],
            "rustc": rustc,
            "args": [],
            "cwd": str(workspace),
            "env": {},
            "recorded_at": 1.0,
            "is_top": True,
        },
    )
    return root


def test_load_captures_skips_a_record_others_can_write(tmp_path):
    os.chmod(tmp_path, 0o700)
    root = write_capture(tmp_path)
    assert list(store.load_captures(root).rustc) == [CrateKey("app", "bin")]
    record = store.rustc_record_path(root, "host-debug", CrateKey("app", "bin"))
    os.chmod(record, 0o666)
    captures = store.load_captures(root)
    assert captures.rustc == {}
    assert any("untrusted capture record" in w and str(record) in w for w in captures.warnings)


def test_load_captures_refuses_an_open_capture_root(tmp_path):
    os.chmod(tmp_path, 0o700)
    root = write_capture(tmp_path)
    os.chmod(root, 0o777)
    captures = store.load_captures(root)
    assert captures.rustc == {} and "untrusted capture root" in captures.warnings[0]


@pytest.mark.parametrize(
    "field,value", [("rustc", ["sh"]), ("args", "x"), ("env", {"A": 1}), ("recorded_at", "soon"), ("cwd", None)]
)
def test_a_record_field_of_the_wrong_type_is_named(tmp_path, field, value):
    os.chmod(tmp_path, 0o700)
    root = write_capture(tmp_path)
    record = store.rustc_record_path(root, "host-debug", CrateKey("app", "bin"))
    data = json.loads(record.read_text())
    data[field] = value
    store.write_json_atomic(record, data)
    captures = store.load_captures(root)
    assert captures.rustc == {}
    assert str(record) in captures.warnings[0] and repr(field) in captures.warnings[0]


def test_lookup_stops_at_the_cargo_workspace_root(tmp_path):
    os.chmod(tmp_path, 0o700)
    write_capture(tmp_path)  # a capture above the project (planted, or just unrelated)
    project = tmp_path / "project"
    (project / "crates" / "app" / "src").mkdir(parents=True)
    (project / "Cargo.toml").write_text('[workspace]\nmembers = ["crates/app"]\n')
    (project / "crates" / "app" / "Cargo.toml").write_text('[package]\nname = "app"\n')
    start = project / "crates" / "app" / "src"
    assert search_directories(start) == [start, start.parent, project / "crates", project]
    with pytest.raises(NoCapture):
        find_captured_workspace(start, env={"THINPATCH_STATE_DIR": str(tmp_path / "state")})
    write_capture(project)
    found = find_captured_workspace(start, env={"THINPATCH_STATE_DIR": str(tmp_path / "state")})
    assert found.workspace == project


def test_lookup_of_a_lone_package_stops_at_its_manifest(tmp_path):
    os.chmod(tmp_path, 0o700)
    write_capture(tmp_path)
    pkg = tmp_path / "pkg"
    (pkg / "src").mkdir(parents=True)
    (pkg / "Cargo.toml").write_text('[package]\nname = "pkg"\n')
    assert search_directories(pkg / "src") == [pkg / "src", pkg]
    with pytest.raises(NoCapture):
        find_captured_workspace(pkg / "src", env={"THINPATCH_STATE_DIR": str(tmp_path / "state")})


def test_lookup_names_a_capture_it_ignored(tmp_path):
    os.chmod(tmp_path, 0o700)
    ws = tmp_path / "ws"
    ws.mkdir()
    (ws / "Cargo.toml").write_text('[package]\nname = "ws"\n')
    root = write_capture(ws)
    os.chmod(root, 0o757)
    with pytest.raises(NoCapture) as info:
        find_captured_workspace(ws, env={"THINPATCH_STATE_DIR": str(tmp_path / "state")})
    assert f"ignored {root}" in str(info.value) and "writable by other users" in str(info.value)


def test_registry_drops_an_entry_whose_workspace_was_recreated(tmp_path):
    os.chmod(tmp_path, 0o700)
    env = {"THINPATCH_STATE_DIR": str(tmp_path / "state")}
    ws = tmp_path / "ws"
    ws.mkdir()
    root = write_capture(ws)
    store.register_workspace(ws, root, env)
    assert [c.workspace for c in registered_workspaces(env)] == [ws]
    entry = store.registry_entry_path(ws, env)
    # Deleted and made again, capture and all: another directory, never registered.
    os.rename(ws, tmp_path / "old")
    ws.mkdir()
    write_capture(ws)
    assert registered_workspaces(env) == []
    assert not entry.exists()


def test_registry_drops_an_entry_whose_workspace_is_gone(tmp_path):
    os.chmod(tmp_path, 0o700)
    env = {"THINPATCH_STATE_DIR": str(tmp_path / "state")}
    ws = tmp_path / "ws"
    ws.mkdir()
    store.register_workspace(ws, write_capture(ws), env)
    os.rename(ws, tmp_path / "elsewhere")
    assert registered_workspaces(env) == []
    assert not store.registry_entry_path(ws, env).exists()


def test_registry_entry_others_can_write_is_ignored(tmp_path):
    os.chmod(tmp_path, 0o700)
    env = {"THINPATCH_STATE_DIR": str(tmp_path / "state")}
    ws = tmp_path / "ws"
    ws.mkdir()
    store.register_workspace(ws, write_capture(ws), env)
    os.chmod(store.registry_entry_path(ws, env), 0o646)
    assert registered_workspaces(env) == []


def test_registry_entry_from_before_identities_is_judged_by_its_owner(tmp_path):
    os.chmod(tmp_path, 0o700)
    env = {"THINPATCH_STATE_DIR": str(tmp_path / "state")}
    ws = tmp_path / "ws"
    ws.mkdir()
    store.register_workspace(ws, write_capture(ws), env)
    entry = store.registry_entry_path(ws, env)
    data = json.loads(entry.read_text())
    del data["identity"]
    store.write_json_atomic(entry, data)
    assert [c.workspace for c in registered_workspaces(env)] == [ws]
    if is_root:
        os.chown(ws, nobody_uid(), -1)  # made again by someone else
        assert registered_workspaces(env) == []
        assert not entry.exists()
