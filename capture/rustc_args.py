"""Parse a rustc command line (the arguments after the rustc path) into the facts thinpatch needs.

Pure and standard-library only: the rustc shim parses every invocation cargo makes, and the
daemon's argument editors (``daemon.build.rustc_plan``) are built on the same parser and the
generic editors below, so both agree on what an argument means. This is the one module that
knows rustc's option syntax.

rustc's option syntax (getopts): long options take their value as the next argument or after
``=`` (``--crate-type bin`` / ``--crate-type=bin``); short options take it as the next argument
or attached (``-C opt-level=0`` / ``-Copt-level=0``, ``-L dir`` / ``-Ldir``). Everything else
is the crate root source (``-`` means stdin).
"""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Sequence

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

    def __init__(self, name: str, value: str | None, index: int, width: int) -> None:
        self.name = name  # normalised: "--crate-type", "-C" (also for --codegen), "-L", ...
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
    ) -> None:
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
        found: list[str] = []
        for opt in self.options:
            setting = codegen_setting(opt)
            if setting is not None and setting[0] == key:
                found.append(setting[1])
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


def _split_option(args: Sequence[str], i: int) -> tuple[str, str | None, int] | None:
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


def parse_rustc_args(args: Sequence[str]) -> RustcArgs:
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
        if name == "--codegen":
            name = "-C"  # one name for both spellings, so callers look for one
        option = Option(name, value, i, width)
        options.append(option)
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
        elif name == "-C":
            setting = codegen_setting(option)
            if setting is not None and setting[0] == "extra-filename":
                extra_filename = setting[1]
            elif setting is not None and setting[0] == "linker":
                linker = setting[1]
        elif name == "--version":
            version = True
        elif name == "--test":
            test = True
        elif not name.startswith("--") and "V" in name[1:]:
            version = True
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


# --------------------------------------------------------------------------- reading and editing
#
# Every helper below parses ``args`` once and works on the options found, so an option's value
# is never mistaken for an option or a crate root, and every spelling of an option is handled:
# ``--emit X`` / ``--emit=X``, ``-o PATH`` / ``-oPATH``, ``-C k=v`` / ``-Ck=v`` /
# ``--codegen k=v`` / ``--codegen=k=v``. An option whose value is missing (the last argument)
# has the value None: it is never matched by value, and removed only by name.


def codegen_setting(option: Option) -> tuple[str, str] | None:
    """``(key, value)`` of a ``-C key=value`` option (value ``""`` for a bare ``-C key``), else None."""
    if option.name != "-C" or option.value is None:
        return None
    key, _, value = option.value.partition("=")
    return key, value


def _codegen_options(args: Sequence[str], key: str) -> list[Option]:
    """Every ``-C key[=value]`` option of ``args``."""
    found: list[Option] = []
    for option in parse_rustc_args(args).options:
        setting = codegen_setting(option)
        if setting is not None and setting[0] == key:
            found.append(option)
    return found


def codegen_value(args: Sequence[str], key: str) -> str | None:
    """The value of the last ``-C key=value`` in any spelling (``""`` for a bare ``-C key``), or None."""
    values = parse_rustc_args(args).codegen(key)
    return values[-1] if values else None


def option_values(args: Sequence[str], name: str) -> list[str]:
    """Values of every occurrence of option ``name`` (``"--extern"``, ``"-L"``, ``"-C"``…), in order."""
    return [o.value for o in parse_rustc_args(args).options if o.name == name and o.value is not None]


def split_extern(value: str) -> tuple[str, str, str | None]:
    """An ``--extern`` value ``[opts:]name[=path]`` as (opts prefix incl. colon or "", name, path or None)."""
    spec, equals, path = value.partition("=")
    opts, colon, name = spec.rpartition(":")
    return opts + colon, name, (path if equals else None)


def spelled_like(option: Option, value: str) -> list[str]:
    """``option`` with a new value, spelled as it was: separate (``--extern V``, ``-C V``) or
    joined (``--extern=V``, ``-CV``; ``--codegen=V`` becomes the equivalent ``-CV``)."""
    if option.width == 2:
        return [option.name, value]
    return [f"{option.name}={value}" if option.name.startswith("--") else option.name + value]


def replace_options(args: Sequence[str], options: Iterable[Option], replacement: Sequence[str] = ()) -> list[str]:
    """``args`` without ``options`` (from a parse of these ``args``); ``replacement`` stands where
    the first of them stood. Every other argument stays verbatim and in order."""
    found = sorted(options, key=lambda o: o.index)
    drop = {i for o in found for i in range(o.index, o.index + o.width)}
    out: list[str] = []
    for i, arg in enumerate(args):
        if found and i == found[0].index:
            out.extend(replacement)
        if i not in drop:
            out.append(arg)
    return out


def remove_options(args: Sequence[str], *names: str) -> list[str]:
    """``args`` without any occurrence of the options ``names`` (e.g. ``"--emit"``, ``"-o"``,
    ``"-g"``), in every spelling, with their values."""
    return replace_options(args, [o for o in parse_rustc_args(args).options if o.name in names])


def remove_codegen_option(args: Sequence[str], key: str) -> list[str]:
    """``args`` without any ``-C key[=value]``, in every spelling."""
    return replace_options(args, _codegen_options(args, key))


def replace_codegen_option(args: Sequence[str], key: str, value: str) -> list[str]:
    """Set ``-C key=value``: the first occurrence is replaced in place, later ones removed.

    Appended at the end when ``key`` was not set.
    """
    matches = _codegen_options(args, key)
    if not matches:
        return [*args, "-C", f"{key}={value}"]
    return replace_options(args, matches, ["-C", f"{key}={value}"])


# --------------------------------------------------------------------------- argument files


def expand_rustc_argfiles(args: list[str], read_text: Callable[[str], str]) -> list[str]:
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
