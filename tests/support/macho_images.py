"""Real Mach-O images made on Linux: a running program and a patch library linked with the
macOS link plan, from Mach-O objects made by clang and linked by rust-lld's Mach-O flavour
(``ld64.lld``, shipped with every rustup toolchain), inspected with ``llvm-objdump``.

The C sources carry Rust's mangled names (an ``__asm__`` label is the symbol name verbatim on
Mach-O), so the project's symbol reader and demangler see what a Rust build gives them. The
code the compiler emits for them is what matters here: on Mach-O, a static defined in the
same object is addressed directly, a function call to a global function goes through the
linker, and a static defined elsewhere is reached through the GOT. rustc emits the same three
shapes for Rust code (checked with ``rustc --target x86_64-apple-darwin`` and
``aarch64-apple-darwin``).
"""

from __future__ import annotations

import atexit
import functools
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from capture.store import LinkRecord
from daemon.build.link_plan import build_link_plan
from tests.support.records import link_line

TARGET = "x86_64-apple-macos11"

COUNTER = "__ZN7gamelib7COUNTER17h0123456789abcdefE"  # gamelib::COUNTER: rebuilt into the patch
KEPT = "__ZN5state4KEPT17h0011223344556677E"  # state::KEPT: a crate the patch does not rebuild
DESCRIBE = "__ZN7gamelib8describe17hfedcba9876543210E"
TICK = "__ZN7gamelib4tick17h1111111111111111E"

_DECLARATIONS = f"""\
int describe(void) __asm__("{DESCRIBE}");
int tick(void) __asm__("{TICK}");
int tick(void) {{ return describe() + counter + kept; }}
int main(void) {{ return tick(); }}
"""

PROGRAM_C = f"""\
int counter __asm__("{COUNTER}") = 5;
int kept __asm__("{KEPT}") = 9;
int describe(void) __asm__("{DESCRIBE}");
int describe(void) {{ return 1; }}
""" + _DECLARATIONS

# The edit: gamelib (describe, tick, COUNTER) is rebuilt; state::KEPT stays in the program.
PATCH_C = f"""\
int counter __asm__("{COUNTER}") = 5;
extern int kept __asm__("{KEPT}");
int describe(void) __asm__("{DESCRIBE}");
int describe(void) {{ return 2; }}
""" + _DECLARATIONS


@dataclass(frozen=True)
class MachOTools:
    clang: str
    ld64_lld: str
    objdump: str

    def driver_args(self) -> list[str]:
        """What a macOS link line gets from the SDK and Apple's ld64 there, given explicitly."""
        return [
            "-target", TARGET, f"--ld-path={self.ld64_lld}", "-nostdlib",
            "-Wl,-platform_version,macos,11.0,11.0",
        ]  # fmt: skip


def find_macho_tools() -> MachOTools | str:
    """The tools, or why they are missing (a skip reason)."""
    clang = shutil.which("clang")
    if clang is None:
        return "clang is not installed (Debian: apt-get install clang): it makes the Mach-O objects"
    objdump = shutil.which("llvm-objdump")
    if objdump is None:
        return "llvm-objdump is not installed (Debian: apt-get install llvm)"
    rustc = shutil.which("rustc")
    if rustc is None:
        return "rustc is not installed: its toolchain ships ld64.lld"
    sysroot = subprocess.run([rustc, "--print", "sysroot"], capture_output=True, text=True).stdout.strip()
    host = re.search(r"^host: (\S+)$", subprocess.run([rustc, "-vV"], capture_output=True, text=True).stdout, re.M)
    lld = Path(sysroot, "lib", "rustlib", host.group(1) if host else "", "bin", "gcc-ld", "ld64.lld")
    if not lld.is_file():
        return f"this Rust toolchain has no Mach-O linker at {lld}"
    return MachOTools(clang, str(lld), objdump)


@dataclass(frozen=True)
class MachOPatch:
    tools: MachOTools
    program: Path  # MH_EXECUTE exporting its symbols, as rustc links a program
    patch: Path  # linked with the macOS link plan
    flat_patch: Path  # the same objects linked with -flat_namespace instead
    captured_link: LinkRecord


def _run(args: list[str], cwd: Path) -> None:
    result = subprocess.run(args, cwd=cwd, capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"{args!r} failed:\n{result.stderr}")


@functools.lru_cache(maxsize=1)
def build_macho_patch() -> MachOPatch | str:
    """Build once per test process; a string says why it can't be built here."""
    tools = find_macho_tools()
    if isinstance(tools, str):
        return tools
    root = Path(tempfile.mkdtemp(prefix="thinpatch macho "))  # a space, as users' paths have
    atexit.register(shutil.rmtree, root, True)
    for name, source in (("program", PROGRAM_C), ("patch", PATCH_C)):
        (root / f"{name}.c").write_text(source)
        _run([tools.clang, "-target", TARGET, "-O0", "-c", f"{name}.c", "-o", f"{name}.o"], root)
    # The shape of rustc's macOS link line for a bin (objects, -arch, -o, -dead_strip,
    # -nodefaultlibs, -export_dynamic), plus a flat namespace the plan must take away.
    captured = link_line(
        tools.clang,
        [
            *tools.driver_args(), str(root / "program.o"), "-arch", "x86_64", "-o", str(root / "program"),
            "-Wl,-dead_strip", "-nodefaultlibs", "-Wl,-export_dynamic", "-Wl,-flat_namespace",
        ],
        cwd=str(root),
        output=str(root / "program"),
    )  # fmt: skip
    _run([captured.linker, *captured.args], root)
    plan = build_link_plan(captured, [root / "patch.o"], root / "libgamelib-patch-1.dylib", "macos")
    _run(plan.argv, root)
    flat = [*plan.args[:-2], "-Wl,-flat_namespace", "-o", str(root / "libflat.dylib")]
    _run([plan.program, *flat], root)
    return MachOPatch(tools, root / "program", plan.output, root / "libflat.dylib", captured)


def bound_symbols(tools: MachOTools, image: Path) -> dict[str, str]:
    """Symbol → table ("bind", "lazy-bind", "weak-bind") for every fixup dyld binds by name."""
    out = subprocess.run(
        [tools.objdump, "--macho", "--bind", "--lazy-bind", "--weak-bind", str(image)],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    bound: dict[str, str] = {}
    table = None
    for line in out.splitlines():
        header = re.match(r"^(Bind|Lazy bind|Weak bind) table:", line)
        if header:
            table = header.group(1).lower().replace(" ", "-")
            continue
        fields = line.split()
        if table and fields and fields[0] != "segment":
            bound[fields[-1]] = table
    return bound


def disassembly(tools: MachOTools, image: Path, symbol: str) -> list[str]:
    """The instructions of one function (``callq 0x430 <name>``), with llvm-objdump's comments."""
    out = subprocess.run(
        [tools.objdump, "-d", "--no-show-raw-insn", str(image)], capture_output=True, text=True, check=True
    ).stdout
    lines: list[str] = []
    inside = False
    for line in out.splitlines():
        if line.endswith(">:"):
            inside = line.endswith(f"<{symbol}>:")
            continue
        if inside and line.strip():
            lines.append(line.split(":", 1)[-1].strip())  # without the instruction's address
    return lines
