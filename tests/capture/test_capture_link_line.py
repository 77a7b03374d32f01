"""Pure tests: response files, link outputs, rustc temporaries, fat-build plans and link edits."""

from __future__ import annotations

import pytest

from capture import fatbuild, link_line
from capture.rustc_args import parse_rustc_args


@pytest.mark.parametrize(
    "text, expected",
    [
        # rustc's own form: one argument per line, backslash and space escaped.
        ("-m64\n/t\\ s/a.o\n-Wl,--as-needed\n", ["-m64", "/t s/a.o", "-Wl,--as-needed"]),
        ("C:\\\\x\\\\y\n", ["C:\\x\\y"]),
        ("a\\ \\ b\n\n", ["a  b"]),
        # General gcc form: whitespace separated, quotes group, backslash escapes anything.
        ("-a -b  'c d' \"e f\"", ["-a", "-b", "c d", "e f"]),
        ("'' x", ["", "x"]),
        ("it\\'s", ["it's"]),
        ("", []),
    ],
)
def test_parse_response_file(text, expected):
    assert link_line.parse_response_file(text) == expected


@pytest.mark.parametrize("arg", ["plain", "/a b/c", "back\\slash", "q'uo\"te", "tab\there", " lead", "trail "])
def test_quote_response_arg_round_trips(arg):
    assert link_line.parse_response_file(link_line.quote_response_arg(arg) + "\n") == [arg]


def test_expand_response_files_nested_relative_and_missing():
    files = {"/w/outer": "-a\n@inner\n", "/w/inner": "-b\n-c\n"}

    def read(path):
        try:
            return files[path]
        except KeyError:
            raise FileNotFoundError(path) from None

    assert link_line.expand_response_files(["x", "@/w/outer", "@/w/missing"], read, cwd="/w") == [
        "x",
        "-a",
        "-b",
        "-c",
        "@/w/missing",
    ]


@pytest.mark.parametrize(
    "args, expected",
    [
        (["-o", "/t/app", "a.o"], "/t/app"),
        (["a.o", "-o/t/b"], "/t/b"),
        (["-o", "x", "-o", "y"], "y"),
        (["a.o"], None),
    ],
)
def test_link_output(args, expected):
    assert link_line.link_output(args) == expected


def test_rustc_temporaries():
    args = [
        "/w/target/debug/deps/rustcRr3AIh/symbols.o",
        "/w/target/debug/deps/app-1.rcgu.o",
        "-Wl,--version-script=/tmp/rustcAbC123/list",
        "@/tmp/rustcZZZZZZ/linker-arguments",
        "/tmp/rustc-not-temp/x.o",
    ]
    assert link_line.rustc_temporaries(args) == [
        "/w/target/debug/deps/rustcRr3AIh/symbols.o",
        "/tmp/rustcAbC123/list",
        "/tmp/rustcZZZZZZ/linker-arguments",
    ]


# --------------------------------------------------------------------------- fat build

BIN = ["--crate-name", "app", "src/main.rs", "--crate-type", "bin", "--emit=dep-info,link"]
# What the shim adds to a program's rustc call by default.
SHIM_ARGS = [
    "-C", "linker=/bin/thinpatch-linker", "-C", "link-arg=-Wl,--export-dynamic", "-C", "link-arg=-Wl,--build-id",
]


def plan(args, env=None, platform="linux", host="x86_64-unknown-linux-gnu"):
    return fatbuild.plan_fat_build(
        parse_rustc_args(args),
        args,
        env or {},
        linker_shim="/bin/thinpatch-linker",
        host_triple=host,
        platform=platform,
        capture_root="/w/target/thinpatch",
        scope="host-debug",
    )


def test_fat_build_default_linker_and_export_dynamic():
    p = plan(BIN)
    assert p.run_args == [*BIN, *SHIM_ARGS]
    assert p.shim_args == SHIM_ARGS
    assert (p.chained_linker, p.linker_source, p.replaced_linker_arg) == ("cc", "default", None)
    assert p.child_env[fatbuild.ENV_LINKER_CHAIN] == "cc"
    assert p.child_env[fatbuild.ENV_LINK_CRATE] == "app"
    assert p.child_env[fatbuild.ENV_FAT_LINK] == "whole-archive-rlibs"


def test_fat_build_replaces_user_linker():
    args = [*BIN, "-C", "linker=/usr/bin/clang"]
    p = plan(args)
    assert p.run_args == [*BIN, *SHIM_ARGS]
    assert (p.chained_linker, p.linker_source, p.replaced_linker_arg) == ("/usr/bin/clang", "args", "/usr/bin/clang")


def test_fat_build_linker_from_cargo_env():
    env = {"CARGO_TARGET_X86_64_UNKNOWN_LINUX_GNU_LINKER": "gcc-12"}
    p = plan(BIN, env=env)
    assert (p.chained_linker, p.linker_source) == ("gcc-12", "env")


def test_fat_build_macos_flag():
    p = plan([*BIN, "--target", "aarch64-apple-darwin"])
    assert p.run_args[-2:] == ["-C", "link-arg=-Wl,-export_dynamic"]


@pytest.mark.parametrize(
    "args",
    [
        ["--crate-name", "lib", "src/lib.rs", "--crate-type", "lib"],
        ["--crate-name", "build_script_build", "build.rs", "--crate-type", "bin"],
        ["--crate-name", "m", "src/lib.rs", "--crate-type", "proc-macro"],
        ["--crate-name", "t", "src/main.rs", "--test"],
        ["--crate-name", "app", "src/main.rs", "--crate-type", "bin", "--emit=metadata"],
        [*BIN, "-C", "linker=ld.lld"],  # rustc would drive a raw ld differently through our shim
    ],
)
def test_fat_build_not_applied(args):
    assert plan(args) is None


def test_fat_build_for_cdylib_and_explicit_flavor():
    assert plan(["--crate-name", "p", "src/lib.rs", "--crate-type", "cdylib"]) is not None
    assert plan([*BIN, "-C", "linker=ld.lld", "-C", "linker-flavor=ld.lld"]) is not None


def test_link_edits():
    line = ["-m64", "a.o", "/d/libfoo-1.rlib", "-Wl,--gc-sections", "-o", "app"]
    assert fatbuild.apply_link_edits(line, ()) == line
    assert fatbuild.apply_link_edits(line, ("no-gc-sections",)) == ["-m64", "a.o", "/d/libfoo-1.rlib", "-o", "app"]
    assert fatbuild.apply_link_edits(line, ("whole-archive-rlibs",))[2:5] == [
        "-Wl,--whole-archive",
        "/d/libfoo-1.rlib",
        "-Wl,--no-whole-archive",
    ]
    assert fatbuild.parse_link_edits("no-gc-sections, bogus") == ("no-gc-sections",)


def test_whole_archive_leaves_the_toolchain_libraries_alone():
    toolchain = "/home/u/.rustup/toolchains/stable-x86_64-unknown-linux-gnu"
    std = f"{toolchain}/lib/rustlib/x86_64-unknown-linux-gnu/lib/libstd-1a2b.rlib"
    line = ["a.o", "/w/target/debug/deps/libdep-1.rlib", std, "-o", "app"]
    assert fatbuild.apply_link_edits(line, fatbuild.DEFAULT_LINK_EDITS) == [
        "a.o",
        "-Wl,--whole-archive",
        "/w/target/debug/deps/libdep-1.rlib",
        "-Wl,--no-whole-archive",
        std,
        "-o",
        "app",
    ]
