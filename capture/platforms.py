"""The platforms thinpatch tells apart, and the object format of each one's binaries.

Standard library only: the rustc shim asks for the platform of the crate it prepares
(``capture.fatbuild``), and the daemon names its libraries and chooses its link flags by it.

A :class:`Platform` is a family of operating systems that link, name and load shared
libraries the same way. It comes from a rustc target triple (:meth:`Platform.from_target`),
from Python's ``sys.platform`` (:meth:`Platform.from_sys_platform`) or from an OS name as
callers spell it (:meth:`Platform.from_name`).

An :class:`ObjectFormat` is what a file *is*: the symbol reader (``daemon.binary.symbols``)
tells ELF from Mach-O by a file's first bytes, whatever it was built for. A platform says what
a build is *for*; :attr:`Platform.object_format` relates the two.

Both are string enums: a member equals its value (``Platform.LINUX == "linux"``), so they can
stand wherever the plain names stood before, as dictionary keys and in messages.
"""

from __future__ import annotations

import enum


class ObjectFormat(enum.StrEnum):
    """The file format of a platform's executables, objects and shared libraries."""

    ELF = "elf"
    MACHO = "macho"
    PE = "pe"


class Platform(enum.StrEnum):
    LINUX = "linux"  # Linux and Android: ELF, lib<name>.so
    BSD = "bsd"  # FreeBSD, NetBSD, OpenBSD, DragonFly: ELF, lib<name>.so
    MACOS = "macos"  # macOS, iOS and Apple's other systems: Mach-O, lib<name>.dylib
    WINDOWS = "windows"  # PE, <name>.dll

    @property
    def object_format(self) -> ObjectFormat:
        if self is Platform.MACOS:
            return ObjectFormat.MACHO
        if self is Platform.WINDOWS:
            return ObjectFormat.PE
        return ObjectFormat.ELF

    @classmethod
    def from_target(cls, triple: str) -> Platform | None:
        """The platform of a rustc target triple (``aarch64-apple-darwin``,
        ``x86_64-linux-android``…), or None (``wasm32-unknown-unknown``, bare metal)."""
        if "apple" in triple or "darwin" in triple:
            return cls.MACOS
        if "linux" in triple or "android" in triple:
            return cls.LINUX
        if any(name in triple for name in _BSD_NAMES):
            return cls.BSD
        if "windows" in triple:
            return cls.WINDOWS
        return None

    @classmethod
    def from_sys_platform(cls, platform: str) -> Platform | None:
        """The platform of a ``sys.platform`` value (``linux``, ``darwin``, ``win32``,
        ``freebsd14``…), or None (``cygwin``, ``emscripten``, ``wasi``)."""
        if platform.startswith("linux") or platform == "android":
            return cls.LINUX
        if platform in ("darwin", "ios"):
            return cls.MACOS
        if platform.startswith(_BSD_NAMES):
            return cls.BSD
        if platform == "win32":
            return cls.WINDOWS
        return None

    @classmethod
    def from_name(cls, name: str) -> Platform:
        """The platform of an OS name as callers spell it, in any case: a member's value, or
        ``android``, ``darwin``, ``ios``, ``win32``. ValueError for any other name."""
        try:
            return _NAMES[name.lower()]
        except KeyError:
            raise ValueError(f"unsupported OS {name!r}; expected one of {sorted(_NAMES)}") from None


_BSD_NAMES = ("freebsd", "netbsd", "openbsd", "dragonfly")

_NAMES = {
    **{p.value: p for p in Platform},
    "android": Platform.LINUX,
    "darwin": Platform.MACOS,
    "ios": Platform.MACOS,
    "win32": Platform.WINDOWS,
}
