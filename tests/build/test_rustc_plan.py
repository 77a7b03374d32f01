"""Argument editors and the patch-object plan, checked as data.

The captured lines below are real ``cargo build -v`` invocations of rustc 1.95 for a
three-crate workspace (app -> mid -> greet), with machine paths shortened to /toolchain
and /ws.
"""

from __future__ import annotations

import shlex
from pathlib import Path

import pytest

from capture.rustc_args import codegen_value, remove_codegen_option
from capture.store import CaptureRecord
from daemon.build.rustc_plan import (
    PlanError,
    add_search_dir,
    build_obj_plan,
    debuginfo_level,
    extern_paths,
    replay_env,
    set_crate_type,
    set_emit,
    set_emit_obj,
    set_extern,
    set_incremental,
    set_json_diagnostics,
    set_out_dir,
)
from daemon.build.session_cache import library_filename, library_filename_for_os, object_filename

GREET_LINE = (
    "--crate-name greet --edition=2024 greet/src/lib.rs --error-format=json "
    "--json=diagnostic-rendered-ansi,artifacts,future-incompat --crate-type lib "
    "--emit=dep-info,metadata,link -C embed-bitcode=no -C debuginfo=2 "
    "--check-cfg 'cfg(docsrs,test)' --check-cfg 'cfg(feature, values())' "
    "-C metadata=c4da3cd0cc7c2673 -C extra-filename=-5c25fea796287d64 "
    "--out-dir /ws/target/debug/deps -C incremental=/ws/target/debug/incremental "
    "-L dependency=/ws/target/debug/deps -C linker=/ws/thinpatch-linker "
    "-C link-arg=-Wl,--export-dynamic"
)
MID_LINE = (
    "--crate-name mid --edition=2024 mid/src/lib.rs --error-format=json "
    "--json=diagnostic-rendered-ansi,artifacts,future-incompat --crate-type lib "
    "--emit=dep-info,metadata,link -C embed-bitcode=no -C debuginfo=2 "
    "--check-cfg 'cfg(docsrs,test)' --check-cfg 'cfg(feature, values())' "
    "-C metadata=925fabf51522ebaa -C extra-filename=-57a69d518c722f8d "
    "--out-dir /ws/target/debug/deps -C incremental=/ws/target/debug/incremental "
    "-L dependency=/ws/target/debug/deps "
    "--extern greet=/ws/target/debug/deps/libgreet-5c25fea796287d64.rmeta "
    "-C linker=/ws/thinpatch-linker -C link-arg=-Wl,--export-dynamic"
)
APP_LINE = (
    "--crate-name app --edition=2024 app/src/main.rs --error-format=json "
    "--json=diagnostic-rendered-ansi,artifacts,future-incompat --crate-type bin "
    "--emit=dep-info,link -C embed-bitcode=no -C debuginfo=2 "
    "--check-cfg 'cfg(docsrs,test)' --check-cfg 'cfg(feature, values())' "
    "-C metadata=a1b7b9b6b65ba2b9 -C extra-filename=-19823c75b2b6817f "
    "--out-dir /ws/target/debug/deps -C incremental=/ws/target/debug/incremental "
    "-L dependency=/ws/target/debug/deps "
    "--extern mid=/ws/target/debug/deps/libmid-57a69d518c722f8d.rlib "
    "-C linker=/ws/thinpatch-linker -C link-arg=-Wl,--export-dynamic"
)
GREET_ARGS = shlex.split(GREET_LINE)
MID_ARGS = shlex.split(MID_LINE)
APP_ARGS = shlex.split(APP_LINE)


def record(args: list[str], crate: str, kind: str, types: list[str], env: dict | None = None) -> CaptureRecord:
    return CaptureRecord.from_json(
        {
            "format": 1,
            "crate_name": crate,
            "kind": kind,
            "crate_types": types,
            "rustc": "/toolchain/bin/rustc",
            "args": args,
            "cwd": "/ws",
            "env": env if env is not None else {"CARGO_PKG_NAME": crate, "PATH": "/usr/bin"},
            "recorded_at": 1.0,
            "extra_filename": codegen_value(args, "extra-filename"),
        },
        Path(f"/captures/{crate}.{kind}.json"),
    )


# --------------------------------------------------------------------------- editors, table-driven

EDITOR_CASES = [
    # (editor, input args, expected output)
    pytest.param(
        lambda a: set_crate_type(a, "bin"),
        ["x.rs", "--crate-type", "lib", "-g"],
        ["x.rs", "-g", "--crate-type", "bin"],
        id="crate-type separated",
    ),
    pytest.param(
        lambda a: set_crate_type(a, "rlib"),
        ["x.rs", "--crate-type=cdylib", "-g"],
        ["x.rs", "-g", "--crate-type", "rlib"],
        id="crate-type equals form",
    ),
    pytest.param(
        lambda a: set_crate_type(a, "rlib"),
        ["--crate-type", "lib", "x.rs", "--crate-type=cdylib", "--crate-type", "staticlib"],
        ["x.rs", "--crate-type", "rlib"],
        id="crate-type several occurrences collapse",
    ),
    pytest.param(
        lambda a: set_crate_type(a, "bin"),
        ["x.rs", "-g"],
        ["x.rs", "-g", "--crate-type", "bin"],
        id="crate-type absent is appended",
    ),
    pytest.param(
        lambda a: set_emit_obj(a, "/s/x.o"),
        ["x.rs", "--emit=dep-info,metadata,link", "-g"],
        ["x.rs", "-g", "--emit=obj=/s/x.o"],
        id="emit comma list",
    ),
    pytest.param(
        lambda a: set_emit_obj(a, "/s/x.o"),
        ["x.rs", "--emit", "link", "--emit=dep-info=/t/x.d", "-g", "--emit", "metadata=/t/x.rmeta"],
        ["x.rs", "-g", "--emit=obj=/s/x.o"],
        id="emit separated, equals and with paths",
    ),
    pytest.param(
        lambda a: set_emit_obj(a, "/s/x.o"),
        ["x.rs"],
        ["x.rs", "--emit=obj=/s/x.o"],
        id="emit absent is appended",
    ),
    pytest.param(
        lambda a: set_emit(a, {"obj": "/s/x.o", "metadata": "/s/libx.rmeta"}),
        ["x.rs", "--emit=link"],
        ["x.rs", "--emit=obj=/s/x.o,metadata=/s/libx.rmeta"],
        id="emit obj and metadata",
    ),
    pytest.param(
        lambda a: set_out_dir(a, "/s/out"),
        ["x.rs", "--out-dir", "/t/deps", "-g", "--out-dir=/t/other"],
        ["x.rs", "-g", "--out-dir", "/s/out"],
        id="out-dir separated and equals",
    ),
    pytest.param(
        lambda a: set_out_dir(a, "/s/out"),
        ["x.rs", "-o", "/t/x", "-O", "-o/t/y"],
        ["x.rs", "-O", "--out-dir", "/s/out"],
        id="out-dir drops -o in both spellings, keeps -O",
    ),
    pytest.param(
        lambda a: set_incremental(a, "/s/inc"),
        ["-C", "incremental=/t/inc", "-Cincremental=/t/2", "--codegen", "incremental=/t/3",
         "--codegen=incremental=/t/4", "-C", "opt-level=0"],
        ["-C", "opt-level=0", "-C", "incremental=/s/inc"],
        id="incremental in every -C spelling",
    ),
    pytest.param(
        lambda a: set_json_diagnostics(a, rendered_ansi=False),
        ["x.rs", "--error-format=json", "--json=diagnostic-rendered-ansi,artifacts,future-incompat"],
        ["x.rs", "--error-format=json"],
        id="json diagnostics plain",
    ),
    pytest.param(
        lambda a: set_json_diagnostics(a, rendered_ansi=True),
        ["x.rs", "--error-format", "human", "--json", "artifacts"],
        ["x.rs", "--error-format=json", "--json=diagnostic-rendered-ansi"],
        id="json diagnostics ansi, separated forms",
    ),
    pytest.param(
        lambda a: set_extern(a, "greet", "/s/deps/libgreet-1.rmeta"),
        ["--extern", "greet=/t/libgreet-1.rmeta", "-L", "x", "--extern=mid=/t/libmid.rlib"],
        ["--extern", "greet=/s/deps/libgreet-1.rmeta", "-L", "x", "--extern=mid=/t/libmid.rlib"],
        id="extern replaced in place",
    ),
    pytest.param(
        lambda a: set_extern(a, "greet", "/s/libgreet.rmeta"),
        ["--extern", "noprelude:greet=/t/libgreet.rlib", "--extern=greet=/t/dup.rlib"],
        ["--extern", "noprelude:greet=/s/libgreet.rmeta"],
        id="extern keeps modifiers, collapses duplicates",
    ),
    pytest.param(
        lambda a: set_extern(a, "greet", "/s/libgreet.rmeta"),
        ["--extern", "other=/t/libother.rlib"],
        ["--extern", "other=/t/libother.rlib", "--extern", "greet=/s/libgreet.rmeta"],
        id="extern absent is appended",
    ),
    pytest.param(
        lambda a: add_search_dir(a, "dependency", "/s/deps"),
        ["-L", "dependency=/t/deps"],
        ["-L", "dependency=/t/deps", "-L", "dependency=/s/deps"],
        id="search dir appended",
    ),
]


@pytest.mark.parametrize("editor, given, expected", EDITOR_CASES)
def test_editor(editor, given, expected):
    assert editor(given) == expected


@pytest.mark.parametrize("editor, given, expected", EDITOR_CASES)
def test_editor_is_idempotent(editor, given, expected):
    assert editor(editor(given)) == editor(given)


@pytest.mark.parametrize("editor, given, expected", EDITOR_CASES)
def test_editor_does_not_mutate_input(editor, given, expected):
    before = list(given)
    editor(given)
    assert given == before


def test_codegen_value_and_externs_from_real_line():
    assert codegen_value(APP_ARGS, "metadata") == "a1b7b9b6b65ba2b9"
    assert codegen_value(["-Cextra-filename=-x"], "extra-filename") == "-x"
    assert codegen_value(APP_ARGS, "lto") is None
    assert extern_paths(MID_ARGS) == {"greet": "/ws/target/debug/deps/libgreet-5c25fea796287d64.rmeta"}


# --------------------------------------------------------------------------- names


def test_file_names():
    assert object_filename("my-crate") == "my_crate.o"
    assert library_filename_for_os("my-crate", "linux") == "libmy_crate.so"
    assert library_filename_for_os("my-crate", "android") == "libmy_crate.so"
    assert library_filename_for_os("my-crate", "macos") == "libmy_crate.dylib"
    assert library_filename_for_os("my-crate", "ios") == "libmy_crate.dylib"
    assert library_filename_for_os("my-crate", "windows") == "my_crate.dll"
    assert library_filename("x") in ("libx.so", "libx.dylib", "x.dll")
    with pytest.raises(ValueError):
        library_filename_for_os("x", "plan9")


# --------------------------------------------------------------------------- plans


def test_bin_plan_keeps_bin_and_emits_objects_into_the_crates_directory(tmp_path):
    plan = build_obj_plan(record(APP_ARGS, "app", "bin", ["bin"]), tmp_path)
    args = list(plan.args)
    assert plan.program == "/toolchain/bin/rustc"
    assert plan.cwd == "/ws"
    assert plan.obj_dir == tmp_path / "objects" / "bin" / "app"
    assert plan.incremental_dir == tmp_path / "incremental" / "app.bin"
    assert plan.metadata_path is None
    # exactly one of each edited option, with the session's paths; no object path (rustc
    # ignores one when it writes several units)
    assert [a for a in args if a.startswith("--emit")] == [f"--emit=dep-info={plan.depinfo_path},obj"]
    assert plan.depinfo_path == tmp_path / "depinfo" / "app.bin.d"
    assert args[args.index("--crate-type") + 1] == "bin" and args.count("--crate-type") == 1
    assert args[args.index("--out-dir") + 1] == str(plan.obj_dir) and args.count("--out-dir") == 1
    assert codegen_value(args, "incremental") == str(plan.incremental_dir)
    assert [a for a in args if "target/debug/incremental" in a] == []
    assert "--error-format=json" in args and [a for a in args if a.startswith("--json")] == ["--json=artifacts"]


def test_plan_keeps_everything_else_verbatim_and_in_order(tmp_path):
    plan = build_obj_plan(record(APP_ARGS, "app", "bin", ["bin"]), tmp_path)
    edited = {
        "--error-format=json",
        "--json=diagnostic-rendered-ansi,artifacts,future-incompat",
        "--emit=dep-info,link",
    }
    untouched_original = []
    skip = 0
    for i, arg in enumerate(APP_ARGS):
        if skip:
            skip -= 1
            continue
        if arg in edited:
            continue
        if arg in ("--crate-type", "--out-dir"):
            skip = 1
            continue
        if arg == "-C" and APP_ARGS[i + 1].startswith("incremental="):
            skip = 1
            continue
        untouched_original.append(arg)
    assert list(plan.args[: len(untouched_original)]) == untouched_original
    for needle in ("-C", "metadata=a1b7b9b6b65ba2b9", "extra-filename=-19823c75b2b6817f",
                   "cfg(feature, values())", "mid=/ws/target/debug/deps/libmid-57a69d518c722f8d.rlib",
                   "dependency=/ws/target/debug/deps", "link-arg=-Wl,--export-dynamic"):
        assert needle in plan.args


def test_lib_plan_forces_rlib(tmp_path):
    plan = build_obj_plan(record(GREET_ARGS, "greet", "lib", ["lib"]), tmp_path)
    assert plan.args[plan.args.index("--crate-type") + 1] == "rlib"
    cdylib = build_obj_plan(record(shlex.split(GREET_LINE.replace("--crate-type lib", "--crate-type cdylib")),
                                   "greet", "lib", ["cdylib"]), tmp_path)
    assert cdylib.args[cdylib.args.index("--crate-type") + 1] == "rlib"


def test_bin_and_lib_types_together_keep_bin(tmp_path):
    plan = build_obj_plan(record(APP_ARGS, "app", "bin", ["lib", "bin"]), tmp_path)
    assert plan.args[plan.args.index("--crate-type") + 1] == "bin"


def test_proc_macro_is_refused(tmp_path):
    with pytest.raises(PlanError, match="proc-macro"):
        build_obj_plan(record(GREET_ARGS, "greet", "proc-macro", ["proc-macro"]), tmp_path)


def test_lib_plan_with_metadata_for_dependents(tmp_path):
    plan = build_obj_plan(record(GREET_ARGS, "greet", "lib", ["lib"]), tmp_path, emit_metadata=True)
    assert plan.metadata_path == tmp_path / "deps" / "libgreet-5c25fea796287d64.rmeta"
    assert f"--emit=dep-info={plan.depinfo_path},obj,metadata={plan.metadata_path}" in plan.args
    # rustc announces the .rmeta before code generation, so dependents can start early
    assert "--json=artifacts" in plan.args


def test_every_plan_asks_for_artifact_notices(tmp_path):
    # rustc names each object it writes this way: those are the ones to link
    plan = build_obj_plan(record(APP_ARGS, "app", "bin", ["bin"]), tmp_path, rendered_ansi=True)
    assert [a for a in plan.args if a.startswith("--json")] == ["--json=diagnostic-rendered-ansi,artifacts"]
    lib = build_obj_plan(record(GREET_ARGS, "greet", "lib", ["lib"]), tmp_path, emit_metadata=True)
    assert [a for a in lib.args if a.startswith("--json")] == ["--json=artifacts"]


def test_dependent_plan_points_extern_at_rebuilt_metadata(tmp_path):
    new = tmp_path / "deps" / "libgreet-5c25fea796287d64.rmeta"
    plan = build_obj_plan(record(MID_ARGS, "mid", "lib", ["lib"]), tmp_path, extern_overrides={"greet": new})
    assert extern_paths(plan.args) == {"greet": str(new)}
    # the session's deps dir is searched too, for crates that reach greet only transitively
    assert plan.args[-2:] == ("-L", f"dependency={tmp_path / 'deps'}")
    assert "dependency=/ws/target/debug/deps" in plan.args


def test_incremental_capture_without_a_count_gets_rustcs_incremental_default(tmp_path):
    # --emit=obj alone would make rustc use ONE unit, and incremental reuse nothing
    assert codegen_value(APP_ARGS, "codegen-units") is None
    plan = build_obj_plan(record(APP_ARGS, "app", "bin", ["bin"]), tmp_path)
    assert codegen_value(plan.args, "codegen-units") == "256"
    assert sum(1 for a in plan.args if "codegen-units" in a) == 1


def test_captured_codegen_units_are_kept(tmp_path):
    for spelling in (["-C", "codegen-units=64"], ["-Ccodegen-units=64"], ["--codegen=codegen-units=64"]):
        plan = build_obj_plan(record([*APP_ARGS, *spelling], "app", "bin", ["bin"]), tmp_path)
        assert codegen_value(plan.args, "codegen-units") == "64"
        assert sum(1 for a in plan.args if "codegen-units" in a) == 1


def test_non_incremental_capture_gets_rustcs_release_default(tmp_path):
    i = APP_ARGS.index("incremental=/ws/target/debug/incremental")
    release = [*APP_ARGS[: i - 1], *APP_ARGS[i + 1 :]]
    assert codegen_value(release, "incremental") is None
    plan = build_obj_plan(record(release, "app", "bin", ["bin"]), tmp_path)
    assert codegen_value(plan.args, "codegen-units") == "16"
    # patch builds stay incremental even when the captured profile is not
    assert codegen_value(plan.args, "incremental") == str(plan.incremental_dir)


def test_each_crate_and_kind_has_its_own_object_directory(tmp_path):
    app = build_obj_plan(record(APP_ARGS, "app", "bin", ["bin"]), tmp_path)
    greet = build_obj_plan(record(GREET_ARGS, "greet", "lib", ["lib"]), tmp_path)
    app_lib = build_obj_plan(record(GREET_ARGS, "app", "lib", ["lib"]), tmp_path)
    assert len({app.obj_dir, greet.obj_dir, app_lib.obj_dir}) == 3
    assert len({app.incremental_dir, greet.incremental_dir, app_lib.incremental_dir}) == 3


def test_plan_is_idempotent_on_its_own_output(tmp_path):
    first = build_obj_plan(record(APP_ARGS, "app", "bin", ["bin"]), tmp_path)
    again = build_obj_plan(record(list(first.args), "app", "bin", ["bin"]), tmp_path)
    assert again.args == first.args


def test_replay_env_drops_jobserver_and_wrappers():
    env = {
        "CARGO_MAKEFLAGS": "-j --jobserver-fds=3,4",
        "MAKEFLAGS": "x",
        "MFLAGS": "y",
        "RUSTC_WORKSPACE_WRAPPER": "thinpatch-rustc",
        "RUSTC_WRAPPER": "w",
        "THINPATCH_CAPTURE_ROOT": "/t",
        "CARGO_PKG_NAME": "app",
        "OUT_DIR": "/t/out",
    }
    assert replay_env(env) == {"CARGO_PKG_NAME": "app", "OUT_DIR": "/t/out"}
    plan = build_obj_plan(record(APP_ARGS, "app", "bin", ["bin"], env=env), "/s")
    assert dict(plan.env) == {"CARGO_PKG_NAME": "app", "OUT_DIR": "/t/out"}


def test_empty_capture_is_refused(tmp_path):
    with pytest.raises(PlanError, match="no rustc arguments"):
        build_obj_plan(record([], "app", "bin", ["bin"]), tmp_path)


@pytest.mark.parametrize("level", ["0", "none", "1", "limited", "line-tables-only", "2", "full"])
def test_debug_info_is_kept_as_captured(tmp_path, level):
    # change analysis compares the patch's code and types with the program's: at another debug
    # level unoptimised code differs, and without full debug info there are no types to compare
    args = [*remove_codegen_option(APP_ARGS, "debuginfo"), "-C", f"debuginfo={level}"]
    plan = build_obj_plan(record(args, "app", "bin", ["bin"]), tmp_path)
    assert debuginfo_level(plan.args) == level
    assert sum(1 for a in plan.args if "debuginfo" in a) == 1
    full = [*remove_codegen_option(APP_ARGS, "debuginfo"), "-g"]
    plan = build_obj_plan(record(full, "app", "bin", ["bin"]), tmp_path)
    assert "-g" in plan.args


def test_debuginfo_level_follows_rustcs_last_one_wins():
    assert debuginfo_level(["-g", "-C", "debuginfo=1"]) == "1"
    assert debuginfo_level(["-C", "debuginfo=1", "-g"]) == "2"
    assert debuginfo_level(["-Copt-level=0"]) is None
