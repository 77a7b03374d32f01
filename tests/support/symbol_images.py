"""Real native images for the symbol tests, built once per test process with rustc and cc,
plus builders of small synthetic ELF and Mach-O files for layouts this machine cannot produce
(32-bit, big-endian, Mach-O)."""

from __future__ import annotations

import atexit
import functools
import shutil
import struct
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

HOST_RS = """\
use std::sync::atomic::{AtomicU64, Ordering};

pub static COUNTER: AtomicU64 = AtomicU64::new(0);
#[no_mangle]
pub static mut TABLE: [u64; 4] = [1, 2, 3, 4];

#[inline(never)]
fn hot(x: u64) -> u64 {
    x * 2
}

fn main() {
    let n = COUNTER.fetch_add(1, Ordering::SeqCst);
    let t = unsafe { TABLE[0] };
    println!("{}", hot(n + t));
}
"""

# The same crate after an edit: a new body, a new std call, a static that grew.
PATCH_RS = (
    HOST_RS.replace("x * 2", "x * 3 + std::env::args().count() as u64")
    .replace("[u64; 4] = [1, 2, 3, 4]", "[u64; 6] = [1, 2, 3, 4, 5, 6]")
)

# An edit that calls something no image defines.
BROKEN_RS = HOST_RS.replace("x * 2", "x * unsafe { thinpatch_test_missing_symbol() }") + (
    '\nextern "C" {\n    fn thinpatch_test_missing_symbol() -> u64;\n}\n'
)

LIB_C = """\
int demo_value = 7;
__thread int demo_tls = 1;
int demo_add(int a, int b) { return a + b + demo_value + demo_tls; }
int demo_add_old(int a, int b) { return a + b; }
__attribute__((weak)) int demo_weak(void) { return 1; }
static int demo_local(int a) { return a * 2; }
int demo_call_local(int a) { return demo_local(a); }
__asm__(".symver demo_add_old,demo_add@DEMO_1.0");
"""

VERSION_SCRIPT = """\
DEMO_1.0 { global: demo_value; local: *; };
DEMO_2.0 { global: demo_add; demo_tls; demo_weak; demo_call_local; } DEMO_1.0;
"""


@dataclass(frozen=True)
class Images:
    root: Path
    host: Path  # bin, linked with --export-dynamic
    patch: Path  # patch library from PATCH_RS
    broken: Path  # patch library with an unresolvable reference
    clib: Path  # C shared library: soname, runpath, versioned and TLS symbols


def _run(args: list[str], cwd: Path) -> None:
    result = subprocess.run(args, cwd=cwd, capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"{args!r} failed:\n{result.stderr}")


def _patch_library(root: Path, source: Path, name: str) -> Path:
    obj = root / f"{name}.o"
    # Same crate name and crate type as the host keeps the symbol hashes equal.
    _run(["rustc", "-g", "--edition=2021", "--crate-type", "bin", "--crate-name", "host",
          f"--emit=obj={obj}", str(source)], root)
    lib = root / f"lib{name}.so"
    _run(["cc", "-shared", str(obj), "-Wl,--unresolved-symbols=ignore-all", "-o", str(lib)], root)
    return lib


@functools.cache
def build_images() -> Images:
    root = Path(tempfile.mkdtemp(prefix="thinpatch symbols "))
    atexit.register(shutil.rmtree, root, True)
    (root / "host.rs").write_text(HOST_RS)
    (root / "patch.rs").write_text(PATCH_RS)
    (root / "broken.rs").write_text(BROKEN_RS)
    host = root / "host"
    _run(["rustc", "-g", "--edition=2021", "--crate-name", "host", "-C", "link-arg=-Wl,--export-dynamic",
          "host.rs", "-o", str(host)], root)
    patch = _patch_library(root, root / "patch.rs", "patch")
    broken = _patch_library(root, root / "broken.rs", "broken")
    (root / "lib.c").write_text(LIB_C)
    (root / "lib.map").write_text(VERSION_SCRIPT)
    clib = root / "libdemo.so.1"
    _run(["cc", "-shared", "-fPIC", "-g", "lib.c", "-Wl,-soname,libdemo.so.1", "-Wl,--version-script=lib.map",
          "-Wl,-rpath,$ORIGIN/private:/opt/demo", "-Wl,--enable-new-dtags", "-lm", "-o", str(clib)], root)
    return Images(root, host, patch, broken, clib)


# --- synthetic files ---------------------------------------------------------------------


@dataclass(frozen=True)
class FakeSymbol:
    name: str
    value: int
    size: int
    type: int  # STT_*
    bind: int  # STB_*
    shndx: int
    other: int = 0


def build_elf(
    bits: int, little: bool, symbols: list[FakeSymbol], needed: list[str] = (), soname: str | None = None
) -> bytes:
    """A minimal relocatable-looking ELF: .symtab/.strtab, and .dynamic/.dynstr if asked."""
    end = "<" if little else ">"
    strtab = bytearray(b"\0")
    entries = []
    for s in symbols:
        offset = len(strtab)
        strtab += s.name.encode() + b"\0"
        info = (s.bind << 4) | s.type
        if bits == 64:
            entries.append(struct.pack(end + "IBBHQQ", offset, info, s.other, s.shndx, s.value, s.size))
        else:
            entries.append(struct.pack(end + "IIIBBH", offset, s.value, s.size, info, s.other, s.shndx))
    sym_size = 24 if bits == 64 else 16
    symtab = b"\0" * sym_size + b"".join(entries)

    dynstr = bytearray(b"\0")
    dyn_entries = []
    for name in needed:
        dyn_entries.append((1, len(dynstr)))
        dynstr += name.encode() + b"\0"
    if soname:
        dyn_entries.append((14, len(dynstr)))
        dynstr += soname.encode() + b"\0"
    dyn_entries.append((0, 0))
    dyn_fmt = end + ("qQ" if bits == 64 else "iI")
    dynamic = b"".join(struct.pack(dyn_fmt, t, v) for t, v in dyn_entries)

    shstrtab = bytearray(b"\0")
    names = {}
    for n in (".strtab", ".symtab", ".dynstr", ".dynamic", ".shstrtab"):
        names[n] = len(shstrtab)
        shstrtab += n.encode() + b"\0"

    ehsize = 64 if bits == 64 else 52
    blobs = [
        (".strtab", 3, bytes(strtab), 0, 0, 0),
        (".symtab", 2, symtab, 1, 1, sym_size),
        (".dynstr", 3, bytes(dynstr), 0, 0, 0),
        (".dynamic", 6, dynamic, 3, 0, 16 if bits == 64 else 8),
        (".shstrtab", 3, bytes(shstrtab), 0, 0, 0),
    ]
    body = bytearray()
    headers = [b"\0" * (64 if bits == 64 else 40)]
    offset = ehsize
    for name, sh_type, blob, link, info, entsize in blobs:
        if bits == 64:
            headers.append(
                struct.pack(end + "IIQQQQIIQQ", names[name], sh_type, 0, 0, offset, len(blob), link, info, 8, entsize)
            )
        else:
            headers.append(
                struct.pack(end + "IIIIIIIIII", names[name], sh_type, 0, 0, offset, len(blob), link, info, 4, entsize)
            )
        body += blob
        offset += len(blob)
    shoff = offset
    ident = b"\x7fELF" + bytes([2 if bits == 64 else 1, 1 if little else 2, 1]) + b"\0" * 9
    if bits == 64:
        header = struct.pack(
            end + "16sHHIQQQIHHHHHH", ident, 3, 62, 1, 0, 0, shoff, 0, ehsize, 0, 0, 64, len(headers), 5
        )
    else:
        header = struct.pack(
            end + "16sHHIIIIIHHHHHH", ident, 3, 8, 1, 0, 0, shoff, 0, ehsize, 0, 0, 40, len(headers), 5
        )
    return header + bytes(body) + b"".join(headers)


def build_macho(symbols: list[tuple[str, int, int, int, int]], dylibs: list[str], rpaths: list[str] = ()) -> bytes:
    """A minimal 64-bit little-endian Mach-O executable: one __TEXT segment with __text and
    __const sections, LC_SYMTAB, LC_LOAD_DYLIB and LC_RPATH commands.

    ``symbols`` are (name, n_type, n_sect, n_desc, n_value)."""
    commands = []
    # LC_SEGMENT_64 with two sections: 1 = __TEXT,__text (0x1000..0x1100), 2 = __TEXT,__const (0x1100..0x1140)
    sections = [
        struct.pack("<16s16sQQIIIIIIII", b"__text", b"__TEXT", 0x1000, 0x100, 0, 0, 0, 0, 0x80000400, 0, 0, 0),
        struct.pack("<16s16sQQIIIIIIII", b"__const", b"__TEXT", 0x1100, 0x40, 0, 0, 0, 0, 0, 0, 0, 0),
    ]
    segment = struct.pack(
        "<II16sQQQQiiII", 0x19, 72 + 80 * len(sections), b"__TEXT", 0x1000, 0x1000, 0, 0, 5, 5, len(sections), 0
    ) + b"".join(sections)
    commands.append(segment)
    for name in dylibs:
        raw = name.encode() + b"\0"
        size = (24 + len(raw) + 7) // 8 * 8
        commands.append(struct.pack("<IIIIII", 0xC, size, 24, 2, 0x10000, 0x10000) + raw.ljust(size - 24, b"\0"))
    for path in rpaths:
        raw = path.encode() + b"\0"
        size = (12 + len(raw) + 7) // 8 * 8
        commands.append(struct.pack("<III", 0x8000001C, size, 12) + raw.ljust(size - 12, b"\0"))
    symtab_cmd_size = 24
    header_size = 32
    commands_size = sum(len(c) for c in commands) + symtab_cmd_size
    symoff = header_size + commands_size
    strtab = bytearray(b" \0")  # index 0 is conventionally a space
    nlist = bytearray()
    for name, n_type, n_sect, n_desc, n_value in symbols:
        nlist += struct.pack("<IBBHQ", len(strtab), n_type, n_sect, n_desc, n_value)
        strtab += name.encode() + b"\0"
    stroff = symoff + len(nlist)
    commands.append(struct.pack("<IIIIII", 0x2, symtab_cmd_size, symoff, len(symbols), stroff, len(strtab)))
    header = struct.pack("<IiiIIIII", 0xFEEDFACF, 0x01000007, 3, 2, len(commands), commands_size, 0, 0)
    return header + b"".join(commands) + bytes(nlist) + bytes(strtab)
