"""Table-driven tests of the rustc argument parser and editors (pure, no processes)."""

from __future__ import annotations

import pytest

from capture.rustc_args import (
    codegen_value,
    expand_rustc_argfiles,
    option_values,
    parse_rustc_args,
    remove_codegen_option,
    remove_options,
    replace_codegen_option,
    replace_options,
    spelled_like,
    split_extern,
)

# A real cargo invocation of a bin crate (rustc 1.95), paths with a space.
CARGO_BIN = [
    "--crate-name", "app", "--edition=2021", "app/src/main.rs", "--error-format=json",
    "--json=diagnostic-rendered-ansi,artifacts,future-incompat", "--crate-type", "bin",
    "--emit=dep-info,link", "-C", "embed-bitcode=no", "-C", "debuginfo=2",
    "--check-cfg", "cfg(docsrs,test)", "--check-cfg", "cfg(feature, values())",
    "-C", "metadata=e992cc1f968b0ad0", "-C", "extra-filename=-9f8f025f09d6c45d",
    "--out-dir", "/w s/target/debug/deps", "-C", "incremental=/w s/target/debug/incremental",
    "-L", "dependency=/w s/target/debug/deps",
    "--extern", "corelib=/w s/target/debug/deps/libcorelib-f7d3efb06def78f2.rlib",
]  # fmt: skip

PROBE = [
    "-", "--crate-name", "___", "--print=file-names", "--crate-type", "bin", "--crate-type", "rlib",
    "--print=sysroot", "-Wwarnings",
]  # fmt: skip


@pytest.mark.parametrize(
    "args, field, expected",
    [
        (CARGO_BIN, "crate_name", "app"),
        (CARGO_BIN, "crate_types", ("bin",)),
        (CARGO_BIN, "out_dir", "/w s/target/debug/deps"),
        (CARGO_BIN, "emit", ("dep-info", "link")),
        (CARGO_BIN, "extra_filename", "-9f8f025f09d6c45d"),
        (CARGO_BIN, "source", "app/src/main.rs"),
        (CARGO_BIN, "source_index", 3),
        (CARGO_BIN, "target", None),
        (CARGO_BIN, "linker", None),
        (CARGO_BIN, "is_probe", False),
        (CARGO_BIN, "kind", "bin"),
        (["--crate-name=x", "a.rs"], "crate_name", "x"),
        (
            ["--crate-type=lib,cdylib", "--crate-type", "staticlib", "a.rs"],
            "crate_types",
            ("lib", "cdylib", "staticlib"),
        ),
        (["--target", "aarch64-apple-darwin", "a.rs"], "target", "aarch64-apple-darwin"),
        (["--target=x86_64-unknown-linux-gnu", "a.rs"], "target", "x86_64-unknown-linux-gnu"),
        (["--emit", "dep-info=/t/a.d,obj=/t/a.o", "a.rs"], "emit_paths", {"dep-info": "/t/a.d", "obj": "/t/a.o"}),
        (["--emit=metadata", "a.rs"], "emit", ("metadata",)),
        (["-Cextra-filename=-abc", "a.rs"], "extra_filename", "-abc"),
        (["-C", "linker=clang", "a.rs"], "linker", "clang"),
        (["-Clinker=gcc", "-C", "linker=clang", "a.rs"], "linker", "clang"),
        (["--codegen", "linker=mold", "a.rs"], "linker", "mold"),
        (["-o", "out", "a.rs"], "output", "out"),
        (["-L", "/x", "-lfoo", "a.rs"], "source", "a.rs"),
        # Values that look like positionals belong to their option.
        (["--cfg", "feature", "--edition", "2021", "src/lib.rs"], "source", "src/lib.rs"),
        (["-A", "warnings", "--cap-lints", "allow", "lib.rs"], "source", "lib.rs"),
        (["--json", "artifacts", "--error-format", "json", "m.rs"], "source", "m.rs"),
        (["--crate-name", "p", "--crate-type", "proc-macro", "lib.rs"], "kind", "proc-macro"),
        (["--crate-name", "build_script_build", "--crate-type", "bin", "build.rs"], "kind", "build-script"),
        (["--crate-name", "t", "--test", "lib.rs"], "kind", "test"),
        (["--crate-name", "l", "--crate-type", "rlib", "lib.rs"], "kind", "lib"),
        (["--crate-name", "l", "lib.rs"], "kind", "lib"),
        # Probes.
        (["-vV"], "is_probe", True),
        (["-V"], "version", True),
        (["--version"], "is_probe", True),
        (PROBE, "is_probe", True),
        (PROBE, "prints", ("file-names", "sysroot")),
        (PROBE, "crate_types", ("bin", "rlib")),
        (["--print", "cfg"], "is_probe", True),
        (["--print=native-static-libs", "--crate-name", "x", "a.rs"], "is_probe", False),
        (["--crate-name", "___", "a.rs"], "is_probe", True),
    ],
)
def test_parse_fields(args, field, expected):
    assert getattr(parse_rustc_args(args), field) == expected


def test_codegen_values_in_order():
    parsed = parse_rustc_args(
        ["-C", "link-arg=-a", "-Clink-arg=-b", "--codegen=link-arg=-c", "-C", "opt-level=0", "x.rs"]
    )
    assert parsed.codegen("link-arg") == ["-a", "-b", "-c"]
    assert parsed.codegen("opt-level") == ["0"]
    assert parsed.codegen("linker") == []


@pytest.mark.parametrize(
    "args, expected",
    [
        (["-C", "linker=cc", "a.rs"], ["-C", "linker=/s/l", "a.rs"]),
        (["-Clinker=cc", "a.rs"], ["-C", "linker=/s/l", "a.rs"]),
        (["a.rs", "-C", "linker=cc", "-Clinker=gcc"], ["a.rs", "-C", "linker=/s/l"]),
        (["a.rs"], ["a.rs", "-C", "linker=/s/l"]),
        # linker-flavor is a different key.
        (["-C", "linker-flavor=gcc", "a.rs"], ["-C", "linker-flavor=gcc", "a.rs", "-C", "linker=/s/l"]),
    ],
)
def test_replace_codegen_option(args, expected):
    assert replace_codegen_option(args, "linker", "/s/l") == expected


def test_remove_codegen_option_both_forms():
    args = ["-C", "incremental=/x", "-Cincremental=/y", "-C", "opt-level=0", "a.rs"]
    assert remove_codegen_option(args, "incremental") == ["-C", "opt-level=0", "a.rs"]


@pytest.mark.parametrize(
    "args, names, expected",
    [
        (["--emit", "link", "a.rs", "--emit=metadata"], ("--emit",), ["a.rs"]),
        (["-o", "/t/x", "-O", "-o/t/y", "a.rs"], ("-o",), ["-O", "a.rs"]),
        (["-g", "-C", "debuginfo=2", "a.rs"], ("-g",), ["-C", "debuginfo=2", "a.rs"]),
        (["--json", "artifacts", "--error-format=json", "a.rs"], ("--json", "--error-format"), ["a.rs"]),
        # A value that looks like an option belongs to the option before it, as rustc reads it.
        (["--cfg", "--emit", "a.rs"], ("--emit",), ["--cfg", "--emit", "a.rs"]),
        # An option whose value is missing (the last argument) is removed by name.
        (["a.rs", "--emit"], ("--emit",), ["a.rs"]),
    ],
)
def test_remove_options(args, names, expected):
    assert remove_options(args, *names) == expected


def test_reading_values():
    args = ["-L", "dependency=/a", "-Lnative=/b", "--extern", "x=/x.rlib", "--extern=noprelude:y", "-C", "opt-level=0",
            "--codegen=opt-level=1", "-Cdebuginfo", "a.rs", "-L"]  # fmt: skip
    assert option_values(args, "-L") == ["dependency=/a", "native=/b"]
    assert option_values(args, "--extern") == ["x=/x.rlib", "noprelude:y"]
    assert codegen_value(args, "opt-level") == "1"
    assert codegen_value(args, "debuginfo") == ""
    assert codegen_value(args, "lto") is None
    assert split_extern("noprelude,force:y=/y.rmeta") == ("noprelude,force:", "y", "/y.rmeta")
    assert split_extern("y") == ("", "y", None)


def test_replace_options_keeps_the_spelling_and_the_place_of_the_first():
    args = ["a.rs", "--extern=x=/1", "-g", "--extern", "x=/2"]
    found = [o for o in parse_rustc_args(args).options if o.name == "--extern"]
    assert replace_options(args, found, spelled_like(found[0], "x=/n")) == ["a.rs", "--extern=x=/n", "-g"]
    assert replace_options(args, found[1:], spelled_like(found[1], "x=/n")) == [
        "a.rs",
        "--extern=x=/1",
        "-g",
        "--extern",
        "x=/n",
    ]
    (joined,) = parse_rustc_args(["-Lx"]).options
    assert spelled_like(joined, "y") == ["-Ly"]


def test_expand_rustc_argfiles():
    files = {"/f/args": "-C\nlink-arg=-Wl,a b\n--cfg\nx\n", "/f/sh": "-C 'link-arg=a b' --cfg y"}
    out = expand_rustc_argfiles(["a.rs", "@/f/args", "@shell:/f/sh"], files.__getitem__)
    assert out == ["a.rs", "-C", "link-arg=-Wl,a b", "--cfg", "x", "-C", "link-arg=a b", "--cfg", "y"]
