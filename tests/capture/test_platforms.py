"""One platform type: from a target triple, from sys.platform and from an OS name."""

from __future__ import annotations

import pytest

from capture.fatbuild import load_flags, target_platform
from capture.platforms import ObjectFormat, Platform

ELF_FLAGS = ["-C", "link-arg=-Wl,--export-dynamic", "-C", "link-arg=-Wl,--build-id"]
MACHO_FLAGS = ["-C", "link-arg=-Wl,-export_dynamic"]


@pytest.mark.parametrize(
    "triple, platform",
    [
        ("x86_64-unknown-linux-gnu", Platform.LINUX),
        ("aarch64-unknown-linux-musl", Platform.LINUX),
        ("aarch64-linux-android", Platform.LINUX),
        ("aarch64-apple-darwin", Platform.MACOS),
        ("aarch64-apple-ios-sim", Platform.MACOS),
        ("x86_64-unknown-freebsd", Platform.BSD),
        ("x86_64-unknown-dragonfly", Platform.BSD),
        ("x86_64-pc-windows-msvc", Platform.WINDOWS),
        ("wasm32-unknown-unknown", None),
        ("thumbv7em-none-eabihf", None),
    ],
)
def test_from_target(triple, platform):
    assert Platform.from_target(triple) is platform


@pytest.mark.parametrize(
    "sys_platform, platform",
    [("linux", Platform.LINUX), ("android", Platform.LINUX), ("darwin", Platform.MACOS), ("ios", Platform.MACOS),
     ("freebsd14", Platform.BSD), ("openbsd7", Platform.BSD), ("win32", Platform.WINDOWS), ("cygwin", None),
     ("emscripten", None)],
)  # fmt: skip
def test_from_sys_platform(sys_platform, platform):
    assert Platform.from_sys_platform(sys_platform) is platform


def test_from_name_and_string_values():
    names = ("linux", "Android", "macos", "darwin", "ios", "windows", "win32", "bsd")
    assert [Platform.from_name(n) for n in names] == [
        Platform.LINUX, Platform.LINUX, Platform.MACOS, Platform.MACOS, Platform.MACOS,
        Platform.WINDOWS, Platform.WINDOWS, Platform.BSD,
    ]  # fmt: skip
    # Each member reads back as itself, so a platform can go wherever an OS name went.
    assert all(Platform.from_name(p) is p for p in Platform)
    assert Platform.LINUX == "linux" and f"{Platform.MACOS}" == "macos"
    with pytest.raises(ValueError, match="unsupported OS 'plan9'"):
        Platform.from_name("plan9")


def test_object_formats():
    assert {p: p.object_format for p in Platform} == {
        Platform.LINUX: ObjectFormat.ELF,
        Platform.BSD: ObjectFormat.ELF,
        Platform.MACOS: ObjectFormat.MACHO,
        Platform.WINDOWS: ObjectFormat.PE,
    }


@pytest.mark.parametrize(
    "target, sys_platform, flags",
    [
        (None, "linux", ELF_FLAGS),
        (None, "darwin", MACHO_FLAGS),
        (None, "freebsd14", ELF_FLAGS),
        (None, "win32", []),
        ("aarch64-apple-darwin", "linux", MACHO_FLAGS),  # the triple wins over the host
        ("x86_64-unknown-netbsd", "darwin", ELF_FLAGS),
        ("x86_64-pc-windows-gnu", "linux", []),
        ("wasm32-unknown-unknown", "linux", []),
    ],
)
def test_load_flags_follow_the_object_format(target, sys_platform, flags):
    assert load_flags(target_platform(target, sys_platform)) == flags
