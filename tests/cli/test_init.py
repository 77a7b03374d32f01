"""`thinpatch init`: the Cargo.toml edit (pure), choosing the program, and a real
`cargo new` project that builds offline with the client and subscribes to a daemon."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from elftools.elf.elffile import ELFFile

from daemon.cli.commands.init import (
    CRATE,
    USAGE_LINES,
    InitError,
    add_path_dependency,
    choose_program,
    dependency_line,
    replace_text,
)

REPO = Path(__file__).parents[2]
BUNDLED_CRATE = (REPO / "daemon" / "data" / "thinpatch-client").resolve()
CRATE_PATH = Path("/opt/thinpatch/data/thinpatch-client")


def dependency(text: str) -> object:
    return tomllib.loads(text)["dependencies"][CRATE]


# --------------------------------------------------------------------------- the edit (pure)


def test_adds_one_line_at_the_end_of_dependencies_keeping_everything_else():
    text = (
        '[package]\nname = "game"  # the game\nedition = "2024"\n\n'
        '[dependencies]\n# rendering\nfoo = "1"\nbar = { version = "2", features = ["x"] }\n\n'
        '[dev-dependencies]\nbaz = "3"\n'
    )
    edited = add_path_dependency(text, CRATE_PATH)
    assert edited == text.replace('["x"] }\n', '["x"] }\n' + dependency_line(CRATE_PATH) + "\n")
    assert dependency(edited) == {"path": str(CRATE_PATH)}
    assert CRATE not in tomllib.loads(edited)["dev-dependencies"]


def test_without_a_dependencies_table_it_appends_one():
    text = '[package]\nname = "game"\nversion = "0.1.0"'  # no final newline
    edited = add_path_dependency(text, CRATE_PATH)
    assert edited.startswith(text + "\n\n[dependencies]\n")
    assert dependency(edited) == {"path": str(CRATE_PATH)}
    # cargo new's own manifest: an empty [dependencies] at the end.
    text = '[package]\nname = "app"\nedition = "2024"\n\n[dependencies]\n'
    assert add_path_dependency(text, CRATE_PATH) == text + dependency_line(CRATE_PATH) + "\n"


def test_running_it_again_changes_nothing_and_a_moved_install_updates_the_path():
    once = add_path_dependency('[package]\nname = "a"\n\n[dependencies]\nfoo = "1"\n', CRATE_PATH)
    assert add_path_dependency(once, CRATE_PATH) == once
    moved = Path("/home/me/.venv/data/thinpatch-client")
    again = add_path_dependency(once, moved)
    assert again == once.replace(str(CRATE_PATH), str(moved))
    # A version requirement from elsewhere becomes the path dependency, on the same line.
    text = '[dependencies]\n  thinpatch-client = "0.1"\nfoo = "1"\n'
    assert add_path_dependency(text, CRATE_PATH) == f'[dependencies]\n  {dependency_line(CRATE_PATH)}\nfoo = "1"\n'


def test_keeps_windows_line_endings_and_quotes_unusual_paths():
    text = '[package]\r\nname = "a"\r\n\r\n[dependencies]\r\nfoo = "1"\r\n'
    odd = Path('/tmp/a "quoted" dir\\x/thinpatch-client')
    edited = add_path_dependency(text, odd)
    assert "\n" not in edited.replace("\r\n", "")
    assert dependency(edited) == {"path": str(odd)}


def test_refuses_what_it_cannot_edit_safely_naming_the_line_to_add():
    with pytest.raises(InitError, match=r"\[dependencies\.thinpatch-client\] table.*\n.*thinpatch-client = \{ path"):
        add_path_dependency('[dependencies.thinpatch-client]\nversion = "0.1"\n', CRATE_PATH)
    with pytest.raises(InitError, match="does not parse"):
        add_path_dependency("[dependencies\nfoo = 1\n", CRATE_PATH)


def package(name: str, manifest: str, *kinds: str) -> dict:
    return {"id": f"{name} 0.1.0", "name": name, "manifest_path": manifest, "targets": [{"kind": [k]} for k in kinds]}


def test_chooses_the_one_program_of_a_workspace_or_asks():
    metadata = {
        "packages": [package("core", "/w/core/Cargo.toml", "lib"), package("game", "/w/game/Cargo.toml", "bin", "lib")],
        "workspace_members": ["core 0.1.0", "game 0.1.0"],
    }
    assert choose_program(metadata, None, Path("/w")) == Path("/w/game/Cargo.toml")
    assert choose_program(metadata, "core", Path("/w")) == Path("/w/core/Cargo.toml")
    with pytest.raises(InitError, match=r"no package named 'nope'.*core, game"):
        choose_program(metadata, "nope", Path("/w"))
    metadata["packages"].append(package("editor", "/w/editor/Cargo.toml", "bin"))
    metadata["workspace_members"].append("editor 0.1.0")
    with pytest.raises(InitError, match=r"several programs \(editor, game\); choose one with --package NAME"):
        choose_program(metadata, None, Path("/w"))
    with pytest.raises(InitError, match="no program"):
        choose_program({"packages": [package("core", "/w/Cargo.toml", "lib")]}, None, Path("/w"))


# --------------------------------------------------------------------------- a real project


def thinpatch(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "daemon", *args], cwd=cwd, capture_output=True, text=True, timeout=120)


def build_id(binary: Path) -> str:
    with binary.open("rb") as f:
        for note in ELFFile(f).get_section_by_name(".note.gnu.build-id").iter_notes():
            if note["n_type"] == "NT_GNU_BUILD_ID":
                return note["n_desc"]
    raise AssertionError("no build ID")


@pytest.mark.cargo
def test_a_new_edition_2024_project_builds_offline_with_the_client_and_subscribes(tmp_path):
    subprocess.run(
        ["cargo", "new", "--quiet", "--vcs", "none", "--bin", "--edition", "2024", "hello"], cwd=tmp_path, check=True
    )
    project = tmp_path / "hello"
    original = (project / "Cargo.toml").read_text()

    out = thinpatch("init", cwd=project)
    assert out.returncode == 0, out.stderr
    assert f"Added {CRATE} to {project / 'Cargo.toml'}" in out.stdout
    for line in USAGE_LINES:
        assert line in out.stdout
    manifest = (project / "Cargo.toml").read_text()
    assert manifest == original + dependency_line(BUNDLED_CRATE) + "\n"
    again = thinpatch("init", "--workspace", str(project), cwd=tmp_path)
    assert again.returncode == 0 and "nothing changed" in again.stdout
    assert (project / "Cargo.toml").read_text() == manifest

    # The two printed lines, pasted in as the user would.
    connect, call = (line.split("//")[0].strip() for line in USAGE_LINES)
    (project / "src" / "main.rs").write_text(
        "fn your_hot_function() -> u32 {\n    42\n}\n\nfn main() {\n"
        f"    {connect}\n"
        "    for _ in 0..100 {\n"
        f"        let answer = {call.rstrip(';')};\n"
        '        println!("answer {answer}");\n'
        "        std::thread::sleep(std::time::Duration::from_millis(50));\n    }\n}\n"
    )
    built = subprocess.run(
        ["cargo", "build", "--offline", "--quiet"], cwd=project, capture_output=True, text=True, timeout=300
    )
    assert built.returncode == 0, built.stderr
    assert "warning" not in built.stderr
    binary = project / "target" / "debug" / "hello"

    # A daemon stand-in on a real socket: the program subscribes and answers a patch.
    socket_dir = tmp_path / "sock"
    socket_dir.mkdir(mode=0o700)
    with socket.socket(socket.AF_UNIX) as server:
        server.bind(str(socket_dir / "thinpatch.sock"))
        server.listen()
        server.settimeout(20)
        program = subprocess.Popen(
            [binary],
            env=dict(os.environ, THINPATCH_SOCKET=str(socket_dir / "thinpatch.sock")),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            connection, _ = server.accept()
            with connection, connection.makefile("rw") as stream:
                stream.write('{"type":"hello","protocol":1,"version":"0.1.0","pid":1,"seq":1}\n')
                stream.flush()
                subscribe = json.loads(stream.readline())
                assert subscribe == {"type": "subscribe", "seq": 1, "pid": program.pid, "build_id": build_id(binary)}
                missing = tmp_path / "libhello-patch-1.so"
                table = {
                    "lib": str(missing),
                    "map": {"4096": 64},
                    "aslr_reference": 1,
                    "new_base_address": 2,
                    "ifunc_count": 0,
                }
                stream.write(
                    json.dumps({"type": "patch-ready", "id": 1, "seq": 2, "for_pid": program.pid, "jump_table": table})
                    + "\n"
                )
                stream.flush()
                result = json.loads(stream.readline())
                assert result["type"] == "patch-result" and result["id"] == 1 and result["pid"] == program.pid
                assert result["applied"] is False and str(missing) in result["message"]
        finally:
            program.kill()
            stdout, stderr = program.communicate(timeout=10)
    assert "answer 42" in stdout
    assert f"thinpatch: patch 1 not applied: {missing}" in stderr


def test_the_manifest_is_replaced_whole_keeping_its_mode(tmp_path):
    manifest = tmp_path / "Cargo.toml"
    manifest.write_text('[package]\nname = "game"\n')
    manifest.chmod(0o640)
    replace_text(manifest, '[package]\nname = "game"\n\n[dependencies]\nx = "1"\n')
    assert manifest.read_text().endswith('x = "1"\n') and (manifest.stat().st_mode & 0o777) == 0o640
    assert [p.name for p in tmp_path.iterdir()] == ["Cargo.toml"]  # no temporary file left


@pytest.fixture
def full_disk(tmp_path):
    """A small tmpfs, filled up (mounting needs root, as in CI)."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    mount = tmp_path / "small"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mount)], capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"no tmpfs here: {done.stderr.decode().strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def test_a_full_disk_leaves_the_manifest_whole_and_says_so(full_disk):
    manifest = full_disk / "Cargo.toml"
    original = '[package]\nname = "game"\n' + "# a comment long enough to need a block of its own\n" * 40
    manifest.write_text(original)
    fd = os.open(full_disk / "filler", os.O_WRONLY | os.O_CREAT)  # take every block left
    try:
        while os.write(fd, b"\0" * 4096):
            pass
    except OSError:
        pass
    finally:
        os.close(fd)
    with pytest.raises(InitError, match=r"Cargo.toml: the disk is full\. It is unchanged; free some space"):
        replace_text(manifest, original + "\n[dependencies]\nthinpatch-client = { path = \"/x\" }\n")
    assert manifest.read_text() == original
    assert sorted(p.name for p in full_disk.iterdir()) == ["Cargo.toml", "filler"]
