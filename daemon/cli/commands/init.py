"""`thinpatch init`: add the bundled client crate to your program as a path dependency."""

from __future__ import annotations

import argparse
import errno
import json
import os
import re
import shutil
import stat
import subprocess
import sys
import tomllib
from importlib import resources
from pathlib import Path
from typing import Any

HELP = "add thinpatch's client crate to your program (offline, a path dependency)"
DESCRIPTION = """\
Adds `thinpatch-client`, the app side of thinpatch (standard library only, no crates.io),
to your program's Cargo.toml as a path dependency on the copy installed with thinpatch,
and prints the two lines of code that make your program apply patches.

The edit is one line in [dependencies]; the rest of Cargo.toml is left as it was. Running
it again changes nothing, or only updates the path if thinpatch moved.

In a workspace with several programs, choose one with --package.

examples:
  thinpatch init
  thinpatch init --workspace ~/src/game --package game
"""

CRATE = "thinpatch-client"
USAGE_LINES = (
    "thinpatch_client::connect();                    // first thing in main()",
    "thinpatch_client::call(|| your_hot_function()); // where you call the code you edit",
)


class InitError(Exception):
    """Something the user must fix; the message says what."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--workspace", metavar="DIR", default=".", help="your cargo project or workspace (default: current directory)"
    )
    parser.add_argument(
        "--package", metavar="NAME", default=None, help="the program's package, when the workspace has several"
    )


def run(args: argparse.Namespace) -> int:
    try:
        crate = bundled_crate()
        metadata = cargo_metadata(Path(args.workspace))
        manifest = choose_program(metadata, args.package, Path(args.workspace))
        text = manifest.read_text()
        edited = add_path_dependency(text, crate)
        if edited != text:
            replace_text(manifest, edited)
    except InitError as exc:
        print(f"thinpatch init: {exc}", file=sys.stderr)
        return 1
    print(next_steps(manifest, crate, changed=edited != text))
    return 0


# ------------------------------------------------------------------ effects


def replace_text(path: Path, text: str) -> None:
    """Replace ``path``'s content whole or not at all: a temporary file beside it (never
    through a symbolic link), fsync, rename; it keeps the file's mode. Raises InitError naming
    the file and the cause (a full disk leaves the file as it was)."""
    tmp = path.with_name(f".{path.name}.thinpatch-{os.getpid()}.tmp")
    try:
        mode = stat.S_IMODE(os.stat(path).st_mode)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, mode)
        try:
            data = text.encode("utf-8")
            view = memoryview(data)
            while view:
                written = os.write(fd, view)
                view = view[written:]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except OSError as exc:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        cause = "the disk is full" if exc.errno in (errno.ENOSPC, errno.EDQUOT) else (exc.strerror or str(exc))
        raise InitError(
            f"could not write {path}: {cause}. It is unchanged; "
            + ("free some space and run `thinpatch init` again" if "full" in cause else "fix that and run it again")
        ) from None


def bundled_crate() -> Path:
    crate = Path(str(resources.files("daemon") / "data" / CRATE))
    if not (crate / "Cargo.toml").is_file():
        raise InitError(f"the client crate is missing from this installation ({crate}); reinstall thinpatch")
    return crate.resolve()


def cargo_metadata(workspace: Path) -> dict[str, Any]:
    cargo = shutil.which("cargo")
    if cargo is None:
        raise InitError("cargo was not found on PATH; install Rust from https://rustup.rs")
    manifest = workspace / "Cargo.toml"
    if not manifest.is_file():
        raise InitError(f"no Cargo.toml in {workspace.resolve()}; run it in your project or pass --workspace DIR")
    from capture.cargo_inputs import untrusted_input

    # cargo reads the configs of the directory it runs in: run it in the project, checked first
    directory = workspace.resolve()
    refusal = untrusted_input(str(directory), os.environ)
    if refusal is not None:
        raise InitError(refusal)
    out = subprocess.run(
        [cargo, "metadata", "--no-deps", "--format-version", "1", "--offline",
         "--manifest-path", str(directory / "Cargo.toml")],
        capture_output=True,
        text=True,
        cwd=directory,
    )
    if out.returncode != 0:
        raise InitError(f"`cargo metadata` failed in {workspace.resolve()}:\n{out.stderr.strip()}")
    return json.loads(out.stdout)


# ------------------------------------------------------------------ plans (pure)


def choose_program(metadata: dict[str, Any], package: str | None, workspace: Path) -> Path:
    """The Cargo.toml of the workspace's program: the package with a `bin` target."""
    members = set(metadata.get("workspace_members") or [])
    packages = [p for p in metadata.get("packages", []) if not members or p.get("id") in members]
    if package is not None:
        chosen = [p for p in packages if p.get("name") == package]
        if not chosen:
            names = ", ".join(sorted(p.get("name", "?") for p in packages))
            raise InitError(f"no package named {package!r} in this workspace (it has: {names})")
        return Path(chosen[0]["manifest_path"])
    programs = [p for p in packages if any("bin" in t.get("kind", []) for t in p.get("targets", []))]
    if not programs:
        raise InitError("this workspace has no program (no bin target); thinpatch patches running programs")
    if len(programs) == 1:
        return Path(programs[0]["manifest_path"])
    here = (workspace / "Cargo.toml").resolve()
    for program in programs:
        if Path(program["manifest_path"]).resolve() == here:
            return here
    names = ", ".join(sorted(p["name"] for p in programs))
    raise InitError(f"this workspace has several programs ({names}); choose one with --package NAME")


_HEADER = re.compile(r"^\s*\[")
_DEPENDENCIES_HEADER = re.compile(r"^\s*\[\s*dependencies\s*\]\s*(#.*)?$")
_OUR_TABLE_HEADER = re.compile(r'^\s*\[\s*dependencies\s*\.\s*"?' + re.escape(CRATE) + r'"?\s*\]')
_OUR_ENTRY = re.compile(r'^(\s*)"?' + re.escape(CRATE) + r'"?\s*=')


def dependency_line(crate: Path) -> str:
    # A JSON string is a valid TOML basic string.
    return f"{CRATE} = {{ path = {json.dumps(str(crate), ensure_ascii=False)} }}"


def add_path_dependency(text: str, crate: Path) -> str:
    """Cargo.toml with the client as a path dependency: one line added or replaced."""
    try:
        parsed = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise InitError(f"Cargo.toml does not parse: {exc}") from None
    current = (parsed.get("dependencies") or {}).get(CRATE)
    if isinstance(current, dict) and current.get("path") == str(crate) and set(current) == {"path"}:
        return text
    newline = "\r\n" if "\r\n" in text else "\n"
    lines = text.splitlines()
    if any(_OUR_TABLE_HEADER.match(line) for line in lines):
        raise InitError(
            f"Cargo.toml declares {CRATE} as a [dependencies.{CRATE}] table; "
            f"replace that table with this line under [dependencies]:\n    {dependency_line(crate)}"
        )
    section = _dependencies_section(lines)
    if section is None:
        body = text if not text or text.endswith(("\n", "\r\n")) else text + newline
        separator = newline if body.strip() else ""
        edited = f"{body}{separator}[dependencies]{newline}{dependency_line(crate)}{newline}"
    else:
        start, end = section
        ours = ((i, m) for i in range(start + 1, end) if (m := _OUR_ENTRY.match(lines[i])) is not None)
        existing = next(ours, None)
        if existing is not None:
            at, entry = existing
            if not _is_one_line_entry(lines[at]):
                raise InitError(
                    f"Cargo.toml's {CRATE} entry spans several lines; replace it with:\n    {dependency_line(crate)}"
                )
            lines[at] = entry.group(1) + dependency_line(crate)
        else:
            insert_at = end
            while insert_at > start + 1 and not lines[insert_at - 1].strip():
                insert_at -= 1  # keep the blank lines before the next table
            lines.insert(insert_at, dependency_line(crate))
        edited = newline.join(lines) + (newline if text.endswith(("\n", "\r\n")) else "")
    check = (tomllib.loads(edited).get("dependencies") or {}).get(CRATE)
    if not isinstance(check, dict) or check.get("path") != str(crate):
        raise InitError(
            f"could not add {CRATE} to Cargo.toml safely; add this line under [dependencies]:\n"
            f"    {dependency_line(crate)}"
        )
    return edited


def _dependencies_section(lines: list[str]) -> tuple[int, int] | None:
    """(header index, index of the next table header or len) of [dependencies]."""
    for index, line in enumerate(lines):
        if _DEPENDENCIES_HEADER.match(line):
            end = next((j for j in range(index + 1, len(lines)) if _HEADER.match(lines[j])), len(lines))
            return index, end
    return None


def _is_one_line_entry(line: str) -> bool:
    try:
        tomllib.loads(line.strip())
    except tomllib.TOMLDecodeError:
        return False
    return True


def next_steps(manifest: Path, crate: Path, changed: bool) -> str:
    done = (
        f"Added {CRATE} to {manifest} (a path dependency on {crate})."
        if changed
        else f"{CRATE} is already a dependency of {manifest}; nothing changed."
    )
    code = "\n".join(f"    {line}" for line in USAGE_LINES)
    return (
        f"{done}\n\nAdd these two lines to your program:\n\n{code}\n\n"
        "Functions that take arguments: `let mut f = thinpatch_client::HotFn::current(my_fn);` "
        "then `f.call((a, b))`.\n"
        + "Then start it with `thinpatch run` and edit away."
    )
