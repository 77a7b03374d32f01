"""Symbol-table figures: which reader to use, what the cache saves, what one patch costs.

    python bench/bench_symbols.py [--json] [--repeat N] [--no-lief] [--no-pyelftools] [PATH ...]

Without paths it measures three images: a small Rust debug bin (rustc), a Rust debug bin
using regex + serde_json from the Debian crates (cargo, offline), and the toolchain's
librustc_driver .so. For each: the time to read every .symtab and .dynsym entry (name,
address, size, type, binding) with LIEF, pyelftools and ``daemon.binary.symbols``; the cache cold,
from disk (a restarted daemon) and from memory; and the per-patch work (jump table and load
check) of the test suite's small patch library (tests/support/symbol_images.py) against that image,
and, as the jump table's worst case, of the image against itself. Best of N runs.
"""

from __future__ import annotations

import argparse
import functools
import glob
import importlib
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from daemon.binary import symbol_cache
from daemon.binary.jump_table import compute_jump_table
from daemon.binary.load_check import check_loadable, loaded_library_paths
from daemon.binary.symbols import read_symbols

DEBIAN_DEMO_MAIN = """\
fn main() {
    let re = regex::Regex::new(r"(\\d+)-(\\w+)").unwrap();
    let v: serde_json::Value = serde_json::from_str(r#"{"a": [1, 2, 3]}"#).unwrap();
    for c in re.captures_iter("12-ab 34-cd") {
        println!("{:?} {}", c.get(1), v);
    }
}
"""


def best_of(repeat: int, fn) -> tuple[float, object]:
    best, result = float("inf"), None
    for _ in range(repeat):
        start = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - start)
    return best, result


def read_with_struct(path: Path) -> int:
    return len(read_symbols(path).symbols)


def read_with_lief(path: Path) -> int:
    import lief

    lief.logging.disable()
    binary = lief.ELF.parse(str(path))
    count = 0
    # symtab_symbols/dynamic_symbols: LIEF's combined `symbols` view is far slower on big files.
    for symbols in (binary.symtab_symbols, binary.dynamic_symbols):
        for s in symbols:
            _ = (s.name, s.value, s.size, s.type, s.binding)  # read every field, as the others do
            count += 1
    return count


def read_with_pyelftools(path: Path) -> int:
    from elftools.elf.elffile import ELFFile

    count = 0
    with open(path, "rb") as f:
        elf = ELFFile(f)
        for name in (".symtab", ".dynsym"):
            section = elf.get_section_by_name(name)
            if section is None:
                continue
            for s in section.iter_symbols():
                (s.name, s["st_value"], s["st_size"], s["st_info"]["type"], s["st_info"]["bind"])
                count += 1
    return count


def build_default_images(workdir: Path) -> list[tuple[str, Path]]:
    images: list[tuple[str, Path]] = []
    from tests.support.symbol_images import build_images

    images.append(("small Rust debug bin (rustc)", build_images().host))
    if shutil.which("cargo") and Path("/usr/share/cargo/registry").is_dir():
        project = workdir / "debian-demo"
        (project / "src").mkdir(parents=True)
        (project / ".cargo").mkdir()
        (project / "Cargo.toml").write_text(
            '[package]\nname = "debian-demo"\nversion = "0.1.0"\nedition = "2021"\n\n'
            '[dependencies]\nregex = "1"\nserde_json = "1"\n'
        )
        (project / ".cargo" / "config.toml").write_text(
            '[source.crates-io]\nreplace-with = "debian"\n[source.debian]\n'
            'directory = "/usr/share/cargo/registry"\n[net]\noffline = true\n'
        )
        (project / "src" / "main.rs").write_text(DEBIAN_DEMO_MAIN)
        result = subprocess.run(["cargo", "build", "-q"], cwd=project, capture_output=True, text=True)
        if result.returncode == 0:
            images.append(("Rust debug bin, regex + serde_json (cargo)", project / "target" / "debug" / "debian-demo"))
        else:
            print(f"skipping the Debian-crates image: {result.stderr.strip()[:300]}", file=sys.stderr)
    sysroot = subprocess.run(["rustc", "--print", "sysroot"], capture_output=True, text=True).stdout.strip()
    drivers = sorted(glob.glob(f"{sysroot}/lib/librustc_driver-*.so"))
    if drivers:
        images.append(("librustc_driver .so (toolchain)", Path(drivers[0])))
    return images


def measure(label: str, path: Path, args, workdir: Path) -> dict:
    row: dict = {"image": label, "path": str(path), "bytes": path.stat().st_size}
    row["symbols"] = read_with_struct(path)
    readers = [("struct_mmap", read_with_struct)]
    if args.lief:
        readers.append(("lief", read_with_lief))
    if args.pyelftools:
        readers.append(("pyelftools", read_with_pyelftools))
    for name, reader in readers:
        # pyelftools takes seconds on the large library: one run is enough to rank it.
        repeat = 1 if name == "pyelftools" and row["bytes"] > 50_000_000 else args.repeat
        seconds, count = best_of(repeat, functools.partial(reader, path))
        row[f"{name}_s"] = round(seconds, 4)
        row[f"{name}_symbols"] = count

    cache_dir = workdir / f"cache-{abs(hash(str(path)))}"

    def cold():
        shutil.rmtree(cache_dir, ignore_errors=True)
        symbol_cache.clear_memory_cache()
        table = symbol_cache.load_symbols(path, cache_dir)
        symbol_cache.wait_for_writes()  # the entry is written behind the load: count it here
        return table

    def from_disk():
        symbol_cache.clear_memory_cache()
        return symbol_cache.load_symbols(path, cache_dir)

    row["cache_cold_s"] = round(best_of(args.repeat, cold)[0], 4)
    row["cache_disk_s"] = round(best_of(args.repeat, from_disk)[0], 4)
    row["cache_memory_s"] = round(best_of(args.repeat, lambda: symbol_cache.load_symbols(path, cache_dir))[0], 6)
    row["cache_entry_bytes"] = sum(p.stat().st_size for p in cache_dir.iterdir())

    # Per patch: the host's table comes from the cache; the patch is parsed fresh. The
    # patch here is the small test patch library when the image is a program, else the image
    # itself (mapping every function: the jump table's worst case).
    host = symbol_cache.load_symbols(path, cache_dir)
    from tests.support.symbol_images import build_images

    patch_path = build_images().patch if host.lookup("main") else path
    if host.lookup("main"):
        libs = [symbol_cache.load_symbols(p, cache_dir) for p in loaded_library_paths(host, path, read_symbols)[0]]
        row["patch_parse_s"] = round(best_of(args.repeat, lambda: read_symbols(patch_path))[0], 4)
        patch = read_symbols(patch_path)
        jump_table_s, _ = best_of(args.repeat, lambda: compute_jump_table(host, patch, str(patch_path)))
        row["jump_table_s"] = round(jump_table_s, 4)
        row["load_check_s"] = round(best_of(args.repeat, lambda: check_loadable(patch, host, libs))[0], 4)
        row["jump_table_against_itself_s"] = round(best_of(1, lambda: compute_jump_table(host, host, str(path)))[0], 4)
    return row


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("paths", nargs="*", type=Path)
    parser.add_argument("--json", action="store_true", help="print one JSON document")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--no-lief", dest="lief", action="store_false")
    parser.add_argument("--no-pyelftools", dest="pyelftools", action="store_false")
    args = parser.parse_args(argv)
    # Import the libraries up front so their import time is not counted as reading time; a
    # comparison library that is not installed is left out of the table, with a note.
    for flag, module, package in (("lief", "lief", "lief"), ("pyelftools", "elftools.elf.elffile", "pyelftools")):
        if getattr(args, flag):
            try:
                importlib.import_module(module)
            except ImportError:
                print(
                    f"bench_symbols: {package} is not installed; its column is left out (pip install {package})",
                    file=sys.stderr,
                )
                setattr(args, flag, False)
    with tempfile.TemporaryDirectory(prefix="thinpatch bench ") as tmp:
        workdir = Path(tmp)
        images = [(str(p), p) for p in args.paths] if args.paths else build_default_images(workdir)
        rows = [measure(label, path, args, workdir) for label, path in images]
    if args.json:
        print(json.dumps({"python": sys.version.split()[0], "rows": rows}, indent=2))
        return 0
    for row in rows:
        print(f"{row['image']}: {row['bytes'] / 1e6:.1f} MB, {row['symbols']} symbols")
        for key in ("struct_mmap_s", "lief_s", "pyelftools_s"):
            if key in row:
                print(f"  {key[:-2]:<12} {row[key]:8.3f} s  ({row[key[:-2] + '_symbols']} symbols)")
        print(
            f"  cache: cold {row['cache_cold_s']:.3f} s, from disk {row['cache_disk_s']:.3f} s,"
            f" from memory {row['cache_memory_s'] * 1e6:.0f} us, entry {row['cache_entry_bytes'] / 1e6:.1f} MB"
        )
        if "jump_table_s" in row:
            print(
                f"  per patch (small test patch library): parse {row['patch_parse_s']:.4f} s, "
                f"jump table {row['jump_table_s']:.4f} s,"
                f" load check {row['load_check_s']:.4f} s"
                f" (jump table of the image against itself {row['jump_table_against_itself_s']:.3f} s)"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
