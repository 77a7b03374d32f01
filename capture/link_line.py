"""Pure helpers for cc-style link lines: ``@response`` files, the output path, rustc's temporaries.

Standard library only (imported by the linker shim).
"""

from __future__ import annotations

import os

# Annotations only: `typing` and `re` would add milliseconds to every link.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable

_MAX_RESPONSE_DEPTH = 16


def _is_rustc_temp_dir(name: str) -> bool:
    # rustc links from a temp dir made with the `tempfile` crate: "rustc" + 6 random characters.
    return len(name) == 11 and name.startswith("rustc") and name[5:].isascii() and name[5:].isalnum()


def parse_response_file(text: str) -> list[str]:
    """Split a GNU ``@file`` the way gcc/ld read it.

    Arguments are separated by whitespace; single or double quotes group; a backslash makes the
    next character literal. rustc writes one argument per line with ``\\`` and space escaped by a
    backslash, which this reads back exactly.
    """
    args: list[str] = []
    current: list[str] = []
    in_arg = False
    quote: str | None = None
    i, n = 0, len(text)
    while i < n:
        ch = text[i]
        if ch == "\\" and i + 1 < n:
            current.append(text[i + 1])
            in_arg = True
            i += 2
            continue
        if quote:
            if ch == quote:
                quote = None
            else:
                current.append(ch)
        elif ch in "'\"":
            quote = ch
            in_arg = True
        elif ch.isspace():
            if in_arg:
                args.append("".join(current))
                current, in_arg = [], False
        else:
            current.append(ch)
            in_arg = True
        i += 1
    if in_arg:
        args.append("".join(current))
    return args


def expand_response_files(
    args: list[str], read_text: Callable[[str], str], cwd: str | None = None, _depth: int = 0
) -> list[str]:
    """``args`` with every readable ``@file`` replaced by its contents, recursively.

    Like gcc, an ``@file`` that cannot be read stays as a literal argument.
    """
    out: list[str] = []
    for arg in args:
        if not arg.startswith("@") or len(arg) == 1 or _depth >= _MAX_RESPONSE_DEPTH:
            out.append(arg)
            continue
        path = arg[1:]
        if cwd and not os.path.isabs(path):
            path = os.path.join(cwd, path)
        try:
            text = read_text(path)
        except OSError:
            out.append(arg)
            continue
        out.extend(expand_response_files(parse_response_file(text), read_text, cwd, _depth + 1))
    return out


def response_file_args(args: list[str]) -> list[str]:
    """Paths of the ``@file`` arguments in ``args`` (as written)."""
    return [a[1:] for a in args if a.startswith("@") and len(a) > 1]


def quote_response_arg(arg: str) -> str:
    """One argument in rustc's GNU response-file form (one per line, ``\\`` and space escaped)."""
    return "".join("\\" + c if c in "\\ \"'\t\n" else c for c in arg)


def link_output(args: list[str]) -> str | None:
    """The ``-o`` output of a cc-style link line (last one wins)."""
    output = None
    i = 0
    while i < len(args):
        arg = args[i]
        if arg == "-o" and i + 1 < len(args):
            output = args[i + 1]
            i += 2
            continue
        if arg.startswith("-o") and len(arg) > 2:
            output = arg[2:]
        i += 1
    return output


def _path_candidates(arg: str) -> list[str]:
    if not arg.startswith("-"):
        return [arg]
    # Paths embedded in options: -Wl,--version-script=/tmp/rustcX/list, -L/tmp/...
    found = []
    for part in arg.replace("=", ",").split(","):
        if part.startswith(("-L", "-B")):
            part = part[2:]
        if part.startswith("/"):
            found.append(part)
    return found


def rustc_temporaries(args: list[str]) -> list[str]:
    """Paths in ``args`` that live in one of rustc's temp dirs (deleted after the link)."""
    temps: list[str] = []
    for arg in args:
        if arg.startswith("@"):
            arg = arg[1:]
        for path in _path_candidates(arg):
            parts = path.split("/")
            if any(_is_rustc_temp_dir(p) for p in parts[:-1]) and path not in temps:
                temps.append(path)
    return temps
