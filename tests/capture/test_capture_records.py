"""What a real captured build records, and that the captured binary still behaves the same."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from capture import store
from daemon.cli.shim_launchers import capture_import_root, launchers_dir
from tests.conftest import FIXTURES

pytestmark = pytest.mark.cargo

EXCLUDED_ENV = {"CARGO_MAKEFLAGS", "MAKEFLAGS", "MFLAGS", "RUSTC_WRAPPER", "RUSTC_WORKSPACE_WRAPPER"}


def run(cmd, **kwargs):
    return subprocess.run(cmd, capture_output=True, text=True, **kwargs)


def plain_build_output(fixture: str, tmp_path: Path, binary: str) -> str:
    """stdout of the fixture's binary built by plain cargo (no wrapper) in its own target dir."""
    env = {k: v for k, v in os.environ.items() if k not in EXCLUDED_ENV and not k.startswith("THINPATCH_")}
    env["CARGO_TARGET_DIR"] = str(tmp_path / "plain target")
    built = run(["cargo", "build", "-q"], cwd=FIXTURES / fixture, env=env)
    assert built.returncode == 0, built.stderr
    return run([str(tmp_path / "plain target" / "debug" / binary)]).stdout


def dynamic_symbols(path: Path) -> set[str]:
    from elftools.elf.elffile import ELFFile

    with open(path, "rb") as fh:
        section = ELFFile(fh).get_section_by_name(".dynsym")
        return {sym.name for sym in section.iter_symbols()}


def test_workspace_records_every_member(captured_workspace):
    result = captured_workspace
    assert {key.label for key in result.captured} == {"app.bin", "app.build-script", "corelib.lib", "macros.proc-macro"}
    caps = result.captures
    assert caps.warnings == []
    assert caps.scope == "host-debug" == result.scope
    assert [r.crate_name for r in caps.top_crates()] == ["app"]


def test_rustc_record_contents(captured_workspace):
    result = captured_workspace
    app = result.captures.crate("app", "bin")
    d = app.to_json()
    ws = result.workspace
    assert d["format"] == store.FORMAT_VERSION
    assert d["crate_name"] == "app" and d["kind"] == "bin" and d["crate_types"] == ["bin"]
    assert d["package"] == "app" and d["manifest_dir"] == str(ws / "app")
    assert d["src"] == str(ws / "app" / "src" / "main.rs")
    assert d["cwd"] == str(ws)
    assert d["workspace"] == str(ws)
    assert d["out_dir"] == str(result.target_dir / "debug" / "deps")
    assert d["profile"] == "debug" and d["scope"] == "host-debug" and d["target"] == result.host_triple
    assert d["wrapper_mode"] == "workspace"
    assert Path(d["rustc"]).name == "rustc" and os.access(d["rustc"], os.X_OK)
    # args = what cargo passed + what the shim added, in that order.
    assert d["args"] == d["cargo_args"] + d["shim_args"]
    linker_shim = d["linker_chain"]["shim"]
    assert Path(linker_shim).name == "thinpatch-linker"
    # cargo ran the rustc shim's launcher, which found the linker's beside it.
    assert Path(linker_shim).parent == launchers_dir(sys.executable, capture_import_root())
    assert d["shim_args"] == [
        "-C",
        f"linker={linker_shim}",
        "-C",
        "link-arg=-Wl,--export-dynamic",
        "-C",
        "link-arg=-Wl,--build-id",
    ]
    assert d["linker_chain"]["chained"] == "cc" and d["is_top"] is True
    assert f"extra-filename={d['extra_filename']}" in d["args"]
    # dep-info is cargo's .d file and lists the crate's sources, the generated one included.
    dep_info = Path(d["dep_info"])
    assert dep_info == Path(d["out_dir"]) / f"app{d['extra_filename']}.d"
    text = dep_info.read_text()
    assert "app/src/main.rs" in text  # rustc writes sources relative to the record's cwd
    assert "generated.rs" in text
    # Environment: what the compile needs, minus jobserver and wrapper variables.
    env = d["env"]
    assert env["CARGO_PKG_NAME"] == "app" and env["CARGO_CRATE_NAME"] == "app"
    assert Path(env["OUT_DIR"], "generated.rs").is_file()
    assert not EXCLUDED_ENV & env.keys()
    assert not [k for k in env if k.startswith("THINPATCH_")]


def test_library_proc_macro_and_build_script_records(captured_workspace):
    caps = captured_workspace.captures
    lib = caps.crate("corelib", "lib").to_json()
    assert lib["kind"] == "lib" and lib["is_top"] is False and lib["shim_args"] == []
    assert lib["args"] == lib["cargo_args"]
    macro = caps.rustc[store.CrateKey("macros", "proc-macro")].to_json()
    assert macro["crate_types"] == ["proc-macro"] and macro["is_top"] is False
    script = caps.rustc[store.CrateKey("app", "build-script")].to_json()
    assert script["crate_name"] == "build_script_build" and script["package"] == "app"
    assert script["is_top"] is False and script["shim_args"] == []


def test_link_record_expanded_and_temporaries(captured_workspace):
    caps = captured_workspace.captures
    link = caps.link_for("app")
    assert link is not None
    d = link.to_json()
    assert d["linker"] == "cc" and d["scope"] == "host-debug"
    app = caps.crate("app", "bin").to_json()
    assert d["output"] == str(Path(app["out_dir"]) / f"app{app['extra_filename']}")
    assert Path(d["output"]).is_file()
    assert any(a.endswith(".rcgu.o") for a in d["args"])
    assert any(a.endswith(".rlib") and "libcorelib" in a for a in d["args"])
    assert "-Wl,--export-dynamic" in d["args"]
    symbols_o = [t for t in d["temporaries"] if t.endswith("symbols.o")]
    assert symbols_o and not Path(symbols_o[0]).exists()  # rustc deleted it after the link


def test_record_files_are_private(captured_workspace):
    root = captured_workspace.capture_root
    files = list(store.captures_dir(root).rglob("*.json"))
    assert files
    for path in files:
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
        json.loads(path.read_text())
    for path in [root, *[p for p in store.captures_dir(root).rglob("*") if p.is_dir()]]:
        assert stat.S_IMODE(path.stat().st_mode) == 0o700, path
    assert not list(store.captures_dir(root).rglob("*.tmp"))


def test_workspace_registered(captured_workspace):
    entries = list(store.iter_registered_workspaces())
    assert any(e.workspace == captured_workspace.workspace for e in entries)


def test_captured_binary_behaves_as_before_and_exports_symbols(captured_single_bin, tmp_path):
    result = captured_single_bin
    assert result.binaries == [result.target_dir / "debug" / "single_bin"]
    captured_out = run([str(result.binaries[0])]).stdout
    assert captured_out == plain_build_output("single_bin", tmp_path, "single_bin")
    assert "calls = 2" in captured_out
    dynsym = dynamic_symbols(result.binaries[0])
    # --export-dynamic: main (the jump table's ASLR reference) and std's functions are exported.
    assert "main" in dynsym
    assert any(s.startswith("_RNv") and "std" in s for s in dynsym)


def test_workspace_binary_behaves_as_before(captured_workspace, tmp_path):
    out = run([str(captured_workspace.binaries[0])]).stdout
    assert out == plain_build_output("workspace", tmp_path, "app")
    assert "magic = 4242" in out and "answer = 42" in out


def test_capture_restores_source_times(captured_single_bin):
    src = captured_single_bin.workspace / "src" / "main.rs"
    assert src.stat().st_mtime_ns == (FIXTURES / "single_bin" / "src" / "main.rs").stat().st_mtime_ns


def test_recapture_of_fresh_workspace_records_again(fixture_copy, capture_state_dir):
    from daemon.cli.capture_run import run_capture

    ws = fixture_copy("single_bin")
    first = run_capture(ws)
    second = run_capture(ws)  # nothing changed: cargo would consider everything fresh
    assert first.exit_code == second.exit_code == 0
    assert second.captured == [store.CrateKey("single_bin", "bin")]
    assert second.captures.crate("single_bin").recorded_at > first.captures.crate("single_bin").recorded_at
    assert second.captures.link_for("single_bin").recorded_at > first.captures.link_for("single_bin").recorded_at


def test_rustc_wrapper_mode_skips_registry_crates(captured_debian):
    caps = captured_debian.captures
    assert set(caps.rustc) == {store.CrateKey("debian_deps", "bin")}
    record = caps.crate("debian_deps").to_json()
    assert record["wrapper_mode"] == "all" and record["is_top"] is True
    assert caps.link_for("debian_deps") is not None
    out = run([str(captured_debian.binaries[0])]).stdout
    assert json.loads(out) == {"from": "10", "to": "20"}
