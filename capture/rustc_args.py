"""Parse a rustc command line (the arguments after the rustc path) into the facts thinpatch needs.

Pure and standard-library only: the rustc shim parses every invocation cargo makes, and the
daemon's argument editors reuse the same parser, so both agree on what an argument means.

rustc's option syntax (getopts): long options take their value as the next argument or after
``=`` (``--crate-type bin`` / ``--crate-type=bin``); short options take it as the next argument
or attached (``-C opt-level=0`` / ``-Copt-level=0``, ``-L dir`` / ``-Ldir``). Everything else
is the crate root source (``-`` means stdin).
"""

from __future__ import annotations

# Long options that take a value. Anything else starting with ``--`` is a flag.
LONG_WITH_VALUE = frozenset(
    {
        "--cfg",
        "--check-cfg",
        "--crate-type",
        "--crate-name",
        "--edition",
        "--emit",
        "--print",
        "--out-dir",
        "--explain",
        "--target",
        "--cap-lints",
        "--codegen",
        "--extern",
        "--sysroot",
        "--error-format",
        "--json",
        "--color",
        "--diagnostic-width",
        "--remap-path-prefix",
        "--env-set",
        "--force-warn",
        "--allow",
        "--warn",
        "--deny",
        "--forbid",
        "--crate-attr",
        "--extern-location",
        "--target-dir",
    }
)
# Short options that take a value (attached or as the next argument).
SHORT_WITH_VALUE = frozenset("CLlAWDFZo")
# Long flags that never take a value, listed so the parser can tell them from typos.
LONG_FLAGS = frozenset({"--test", "--version", "--verbose", "--help"})


class Option:
    """One option as it appeared: ``index`` is its first argument, ``width`` 1 or 2 arguments."""

    __slots__ = ("name", "value", "index", "width")

    def __init__(self, name: str, value: str | None, index: int, width: int):
        self.name = name  # normalised: "--crate-type", "-C", "-L", ...
        self.value = value
        self.index = index
        self.width = width

    def __repr__(self) -> str:
        return f"Option({self.name!r}, {self.value!r}, index={self.index}, width={self.width})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Option) and (self.name, self.value, self.index, self.width) == (
            other.name,
            other.value,
            other.index,
            other.width,
        )


class RustcArgs:
    """What one rustc command line asks for.

    A plain class rather than a dataclass: importing ``dataclasses`` costs the shim several
    milliseconds on every rustc call.
    """

    def __init__(
        self,
        options: tuple[Option, ...] = (),
        crate_name: str | None = None,
        crate_types: tuple[str, ...] = (),
        out_dir: str | None = None,
        output: str | None = None,
        target: str | None = None,
        emit: tuple[str, ...] = (),
        emit_paths: dict[str, str] | None = None,
        extra_filename: str = "",
        linker: str | None = None,
        source: str | None = None,
        source_index: int | None = None,
        prints: tuple[str, ...] = (),
        version: bool = False,
        test: bool = False,
    ):
        self.options = options
        self.crate_name = crate_name
        self.crate_types = crate_types
        self.out_dir = out_dir
        self.output = output  # -o
        self.target = target
        self.emit = emit  # kinds in order: "dep-info", "link", ...
        self.emit_paths = emit_paths or {}  # kind -> explicit path
        self.extra_filename = extra_filename
        self.linker = linker  # last -C linker=
        self.source = source  # crate root; "-" is stdin
        self.source_index = source_index
        self.prints = prints
        self.version = version  # -vV / -V / --version
        self.test = test  # --test harness build

    def __repr__(self) -> str:
        return f"RustcArgs(crate_name={self.crate_name!r}, crate_types={self.crate_types!r}, source={self.source!r})"

    def codegen(self, key: str) -> list[str]:
        """Values of every ``-C key=value`` in order (``""`` for a bare ``-C key``)."""
        found = []
        for opt in self.options:
            if opt.name == "-C" and opt.value is not None:
                k, _, v = opt.value.partition("=")
                if k == key:
                    found.append(v)
        return found

    @property
    def is_probe(self) -> bool:
        """Cargo's probes (version, target info): not compilations, never recorded."""
        if self.version or self.source in (None, "-"):
            return True
        return self.crate_name == "___"

    @property
    def kind(self) -> str:
        """``build-script``, ``proc-macro``, ``test``, ``bin`` or ``lib``."""
        if self.crate_name and self.crate_name.startswith("build_script_"):
            return "build-script"
        if "proc-macro" in self.crate_types:
            return "proc-macro"
        if self.test:
            return "test"
        if "bin" in self.crate_types:
            return "bin"
        return "lib"


def _split_option(args: list[str], i: int) -> tuple[str, str | None, int] | None:
    """(name, value, width) for an option at ``args[i]``, or None for a positional argument."""
    arg = args[i]
    if arg == "-" or not arg.startswith("-"):
        return None
    if arg.startswith("--"):
        name, eq, value = arg.partition("=")
        if eq:
            return name, value, 1
        if name in LONG_WITH_VALUE:
            return (name, args[i + 1], 2) if i + 1 < len(args) else (name, None, 1)
        return name, None, 1
    letter = arg[1]
    if letter in SHORT_WITH_VALUE:
        name = "-" + letter
        if len(arg) > 2:
            return name, arg[2:], 1
        return (name, args[i + 1], 2) if i + 1 < len(args) else (name, None, 1)
    # Clustered short flags such as -vV, -O, -g.
    return arg, None, 1


def parse_rustc_args(args: list[str] | tuple[str, ...]) -> RustcArgs:
    args = list(args)
    options: list[Option] = []
    crate_name = out_dir = output = target = linker = source = None
    source_index = None
    extra_filename = ""
    crate_types: list[str] = []
    emit: list[str] = []
    emit_paths: dict[str, str] = {}
    prints: list[str] = []
    version = test = False
    i = 0
    while i < len(args):
        split = _split_option(args, i)
        if split is None:
            if source is None:
                source, source_index = args[i], i
            i += 1
            continue
        name, value, width = split
        options.append(Option(name, value, i, width))
        i += width
        if name == "--crate-name" and value is not None:
            crate_name = value
        elif name == "--crate-type" and value is not None:
            crate_types.extend(t.strip() for t in value.split(",") if t.strip())
        elif name == "--out-dir":
            out_dir = value
        elif name == "-o":
            output = value
        elif name == "--target":
            target = value
        elif name == "--emit" and value is not None:
            for item in value.split(","):
                kind, eq, path = item.strip().partition("=")
                if kind:
                    emit.append(kind)
                    if eq:
                        emit_paths[kind] = path
        elif name == "--print" and value is not None:
            prints.append(value)
        elif name in ("-C", "--codegen") and value is not None:
            key, _, val = value.partition("=")
            if key == "extra-filename":
                extra_filename = val
            elif key == "linker":
                linker = val
        elif name == "--version":
            version = True
        elif name == "--test":
            test = True
        elif not name.startswith("--") and "V" in name[1:]:
            version = True
    # Normalise --codegen to -C so callers look for one name.
    options = [Option("-C", o.value, o.index, o.width) if o.name == "--codegen" else o for o in options]
    return RustcArgs(
        options=tuple(options),
        crate_name=crate_name,
        crate_types=tuple(crate_types),
        out_dir=out_dir,
        output=output,
        target=target,
        emit=tuple(emit),
        emit_paths=emit_paths,
        extra_filename=extra_filename,
        linker=linker,
        source=source,
        source_index=source_index,
        prints=tuple(prints),
        version=version,
        test=test,
    )


# --------------------------------------------------------------------------- editing


def remove_codegen_option(args: list[str], key: str) -> list[str]:
    """``args`` without any ``-C key[=value]`` (both the separated and attached forms)."""
    parsed = parse_rustc_args(args)
    drop: set[int] = set()
    for opt in parsed.options:
        if opt.name == "-C" and opt.value is not None and opt.value.partition("=")[0] == key:
            drop.update(range(opt.index, opt.index + opt.width))
    return [a for i, a in enumerate(args) if i not in drop]


def replace_codegen_option(args: list[str], key: str, value: str) -> list[str]:
    """Set ``-C key=value``: the first occurrence is replaced in place, later ones removed.

    Appended at the end when ``key`` was not set.
    """
    parsed = parse_rustc_args(args)
    matches = [
        o for o in parsed.options if o.name == "-C" and o.value is not None and o.value.partition("=")[0] == key
    ]
    if not matches:
        return [*args, "-C", f"{key}={value}"]
    first, rest = matches[0], matches[1:]
    drop = {i for o in rest for i in range(o.index, o.index + o.width)}
    out: list[str] = []
    for i, arg in enumerate(args):
        if i in drop:
            continue
        if i == first.index:
            out.extend(["-C", f"{key}={value}"])
        elif first.index < i < first.index + first.width:
            continue
        else:
            out.append(arg)
    return out


# --------------------------------------------------------------------------- argument files


def expand_rustc_argfiles(args: list[str], read_text) -> list[str]:
    """Expand rustc's own ``@path`` / ``@shell:path`` argument files (one argument per line).

    ``read_text(path) -> str`` is injected so the function stays pure for tests.
    """
    out: list[str] = []
    for arg in args:
        if not arg.startswith("@") or len(arg) == 1:
            out.append(arg)
            continue
        path = arg[1:]
        if path.startswith("shell:"):
            import shlex

            out.extend(shlex.split(read_text(path[len("shell:") :])))
        else:
            out.extend(read_text(path).splitlines())
    return out
