"""The files cargo (and rustup) read before they build, and whether they can be trusted.

Cargo looks for the workspace in every ``Cargo.toml`` from the project directory up to ``/``,
reads ``.cargo/config.toml`` (and the older ``.cargo/config``) in the directory it runs in and
each one above it, then in ``$CARGO_HOME``; rustup reads ``rust-toolchain.toml`` (or
``rust-toolchain``) the same way. Any of them can make the build run a program: a workspace
member's ``build.rs``, a config's ``linker`` or ``build.rustc``, a toolchain's ``path``. So
each one that exists, and the directories holding it, must be owned by this user or root and
writable by no one else (sshd's StrictModes, for cargo), or capture and run refuse before
cargo starts.

:func:`cargo_inputs` (which files, for a directory and an environment) and
:func:`refusal_message` are pure; :func:`untrusted_input` and :func:`configs_seen` look at the
disk. Standard library only, as the rest of ``capture``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from capture.store import ConfigSeen
from capture.trust import Distrust, foreign_writer

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Mapping

WORKSPACE, CONFIG, HOME_CONFIG, TOOLCHAIN = "workspace", "config", "home config", "toolchain"

# How each kind of file would be read, naming the file (or "it").
_READ_AS = {
    WORKSPACE: "cargo would read {file} as this project's workspace (its members' build scripts run as you)",
    CONFIG: "cargo would read {file} as configuration (it can name the compiler and linker that run as you)",
    HOME_CONFIG: "cargo would read {file} as your configuration (it can name the compiler and linker that run as you)",
    TOOLCHAIN: "rustup would read {file} to choose the toolchain that runs as you",
}


@dataclass(frozen=True)
class CargoInput:
    path: str
    kind: str  # WORKSPACE, CONFIG, HOME_CONFIG or TOOLCHAIN


def cargo_home(env: Mapping[str, str]) -> str:
    """``$CARGO_HOME``, else ``$HOME/.cargo``, as cargo finds it."""
    if env.get("CARGO_HOME"):
        return os.path.abspath(env["CARGO_HOME"])
    home = env.get("HOME") or os.path.expanduser("~")
    return os.path.join(home, ".cargo")


def _upwards(directory: str) -> list[str]:
    found = [directory]
    while os.path.dirname(found[-1]) != found[-1]:
        found.append(os.path.dirname(found[-1]))
    return found


def cargo_inputs(directory: str, env: Mapping[str, str]) -> list[CargoInput]:
    """Every file cargo or rustup may read when building in ``directory`` (an absolute, real
    path: cargo's working directory), whether it exists or not, nearest first."""
    inputs: list[CargoInput] = []
    for place in _upwards(os.path.normpath(directory)):
        inputs.append(CargoInput(os.path.join(place, "Cargo.toml"), WORKSPACE))
        for name in ("config.toml", "config"):
            inputs.append(CargoInput(os.path.join(place, ".cargo", name), CONFIG))
        for name in ("rust-toolchain.toml", "rust-toolchain"):
            inputs.append(CargoInput(os.path.join(place, name), TOOLCHAIN))
    home = cargo_home(env)
    for name in ("config.toml", "config"):
        inputs.append(CargoInput(os.path.join(home, name), HOME_CONFIG))
    unique: dict[str, CargoInput] = {}
    for found in inputs:
        unique.setdefault(found.path, found)  # $CARGO_HOME may be one of the directories above
    return list(unique.values())


def refusal_message(found: CargoInput, distrust: Distrust) -> str:
    """One message: the file, who else can write it (or the directory above it) and the fix."""
    kind = found.kind
    holder = os.path.dirname(os.path.dirname(found.path)) if kind == CONFIG else os.path.dirname(found.path)
    if distrust.path in (found.path, os.path.realpath(found.path)):
        what = f"{distrust.path} {distrust.problem}, and {_READ_AS[kind].format(file='it')}"
        fix_owner = f"have root or you own {distrust.path} and make it writable only by you"
    else:
        what = (
            f"{_READ_AS[kind].format(file=found.path)}, but {distrust.path} above it "
            f"{distrust.problem}, so someone else could replace it"
        )
        fix_owner = f"have root or you own {distrust.path} and make it writable only by you (or sticky, like /tmp)"
    if kind == HOME_CONFIG:
        fix = f"Point CARGO_HOME at a directory of your own, or {fix_owner}."
    else:
        fix = f"Move the project out of {holder}, or {fix_owner}."
    return f"refusing to build: {what}. {fix}"


def untrusted_input(
    directory: str,
    env: Mapping[str, str],
    *,
    exists: Callable[[str], bool] = os.path.lexists,
    distrust_of: Callable[[str], Distrust | None] = foreign_writer,
) -> str | None:
    """The refusal for the first file cargo would read in ``directory`` that someone else
    could have written, or ``None`` when every one is trusted."""
    for found in cargo_inputs(directory, env):
        if not exists(found.path):
            continue
        distrust = distrust_of(found.path)
        if distrust is not None:
            return refusal_message(found, distrust)
    return None


# --------------------------------------------------------------------------- configs in a capture

# Config keys that choose what runs, or how, when rustc or the linker runs again at a replay.
_TOOL_KEYS = frozenset({"rustc", "rustc-wrapper", "rustc-workspace-wrapper", "rustflags", "linker"})


def names_tools(text: str) -> bool:
    """Whether a cargo config sets anything a replayed rustc or link depends on: the compiler,
    a wrapper, a linker, flags, rustc's environment, or another file (``include``). A config
    that doesn't parse is taken to."""
    import tomllib

    try:
        data = tomllib.loads(text)
    except (tomllib.TOMLDecodeError, UnicodeDecodeError):
        return True
    if data.keys() & {"env", "include", "host"}:
        return True
    build = data.get("build")
    if isinstance(build, dict) and build.keys() & _TOOL_KEYS:
        return True
    targets = data.get("target")
    if isinstance(targets, dict):
        return any(isinstance(t, dict) and t.keys() & _TOOL_KEYS for t in targets.values())
    return False


def configs_seen(directory: str, env: Mapping[str, str]) -> list[ConfigSeen]:
    """The cargo configs that apply to a build in ``directory``, as they are now."""
    seen: list[ConfigSeen] = []
    for found in cargo_inputs(directory, env):
        if found.kind not in (CONFIG, HOME_CONFIG):
            continue
        try:
            info = os.stat(found.path)
            with open(found.path, encoding="utf-8", errors="replace") as fh:
                text = fh.read()
        except OSError:
            continue
        seen.append(ConfigSeen(found.path, info.st_dev, info.st_ino, info.st_uid, names_tools(text)))
    return seen
