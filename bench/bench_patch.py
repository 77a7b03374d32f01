"""Benchmark of one edit: thinpatch's patch library against a plain incremental `cargo build`.

On a copy of tests/fixtures/livehost (regex + serde_json from Debian's crates), captured once
with `thinpatch capture`, every round makes a one-line edit to app/src/main.rs and measures:
  * edit -> verified patch library (one Patcher reused across rounds, as the daemon does; the
    first patch, which also parses the host binary, is reported apart from the rounds), with
    its rustc / link / verify split;
  * edit -> `cargo build` finished, in a second copy with its own target dir (built once
    beforehand, untimed), so neither invalidates the other's artifacts. The order of the two
    is swapped every round so cache warm-up favours neither.
And the symbol work: the host binary parsed cold, from the on-disk cache (fresh process
memory), from memory; per patch, parsing the patch library, the jump table and the load check.

    python bench/bench_patch.py [--rounds N] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import anyio

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from daemon.binary.jump_table import compute_jump_table  # noqa: E402
from daemon.binary.load_check import check_loadable, loaded_library_paths  # noqa: E402
from daemon.binary.symbol_cache import SymbolCache  # noqa: E402
from daemon.binary.symbols import read_symbols  # noqa: E402
from daemon.cli.capture_run import run_capture  # noqa: E402
from daemon.service.patcher import Patcher, host_binary, open_patcher  # noqa: E402
from tests.support.fixtures import copy_fixture_tree  # noqa: E402

FIXTURE = REPO / "tests" / "fixtures" / "livehost"
EDITED_FILE = Path("app") / "src" / "main.rs"
ORIGINAL_LINE = '"app v1 #{} calls={}"'
# Variables that would change what cargo builds or where: the bench sets its own.
DROPPED_VARS = ("RUSTC_WRAPPER", "RUSTC_WORKSPACE_WRAPPER", "CARGO_TARGET_DIR", "CARGO_BUILD_TARGET_DIR")


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in DROPPED_VARS and not k.startswith("THINPATCH_")}
    env.update(extra)
    return env


def ms_since(start: float) -> float:
    return (time.perf_counter() - start) * 1000


def summary(values: list[float]) -> dict:
    return {"median_ms": statistics.median(values), "min_ms": min(values), "runs_ms": values}


def machine() -> dict:
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    rustc = subprocess.run(["rustc", "-V"], capture_output=True, text=True).stdout.strip()
    cargo = subprocess.run(["cargo", "-V"], capture_output=True, text=True).stdout.strip()
    return {
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "nproc": os.cpu_count(),
        "cpu": cpu,
        "rustc": rustc,
        "cargo": cargo,
        "python": platform.python_version(),
        "system": f"{platform.system()} {platform.machine()}",
        "load_average_at_start": os.getloadavg(),
    }


class EditableSource:
    """app/src/main.rs of one workspace copy; each edit replaces the greeting's format string."""

    def __init__(self, workspace: Path):
        self.path = workspace / EDITED_FILE
        self.original = self.path.read_text()
        if ORIGINAL_LINE not in self.original:
            raise SystemExit(f"{self.path} no longer contains {ORIGINAL_LINE}: update the bench")

    def edit(self, tag: str) -> None:
        self.path.write_text(self.original.replace(ORIGINAL_LINE, f'"app v1 {tag} #{{}} calls={{}}"'))


async def timed_cargo_build(workspace: Path, env: dict[str, str]) -> float:
    start = time.perf_counter()
    result = await anyio.run_process(["cargo", "build", "-q"], cwd=workspace, env=env, check=False)
    elapsed = ms_since(start)
    if result.returncode != 0:
        raise SystemExit(f"cargo build failed in {workspace}:\n{result.stderr.decode(errors='replace')}")
    return elapsed


def require_string(binary: Path, text: str) -> None:
    """The build really contains this round's edit (not a stale artifact)."""
    if text.encode() not in binary.read_bytes():
        raise SystemExit(f"{binary} does not contain {text!r}: the edit was not rebuilt")


def per_patch_symbol_work(patcher: Patcher, host, result) -> dict:
    """The verify step's parts, redone on the library just built (the same calls as Patcher._verify)."""
    lib = Path(result.lib)
    start = time.perf_counter()
    patch = read_symbols(lib)
    parse_ms = ms_since(start)
    patch_libs, _ = loaded_library_paths(patch, lib, lambda p: patcher.symbol_cache.load(p, patcher.symbol_cache_dir))
    libraries = host.libraries + [patcher.symbol_cache.load(p, patcher.symbol_cache_dir) for p in patch_libs]
    start = time.perf_counter()
    compute_jump_table(host.table, patch, str(lib), {result.program.name, *(key.name for key in result.edited)})
    jump_ms = ms_since(start)
    start = time.perf_counter()
    check = check_loadable(patch, host.table, libraries)
    load_ms = ms_since(start)
    if not check.ok:
        raise SystemExit(f"load check failed on a patch the Patcher accepted: {check.missing[:5]}")
    return {
        "patch_parse_ms": parse_ms,
        "jump_table_ms": jump_ms,
        "load_check_ms": load_ms,
        "patch_symbols": len(patch.symbols),
        "lib_bytes": lib.stat().st_size,
    }


def host_parse_figures(path: Path, cache_dir: Path, repeat: int) -> dict:
    cold, disk, memory = [], [], []
    symbols = 0
    for _ in range(repeat):
        start = time.perf_counter()
        symbols = len(read_symbols(path).symbols)
        cold.append(ms_since(start))
        cache = SymbolCache()  # empty memory, warm disk: a restarted daemon
        start = time.perf_counter()
        cache.load(path, cache_dir)
        disk.append(ms_since(start))
        start = time.perf_counter()
        cache.load(path, cache_dir)
        memory.append(ms_since(start))
    return {
        "binary": str(path),
        "binary_bytes": path.stat().st_size,
        "symbols": symbols,
        "cold_parse": summary(cold),
        "from_disk_cache": summary(disk),
        "from_memory": summary(memory),
    }


async def bench(work: Path, rounds: int) -> dict:
    machine_info = machine()
    patch_ws = work / "patched" / "livehost"
    cargo_ws = work / "cargo" / "livehost"
    for ws in (patch_ws, cargo_ws):
        copy_fixture_tree(FIXTURE, ws)
    env = clean_env(THINPATCH_STATE_DIR=str(work / "state"))
    os.environ.update(THINPATCH_STATE_DIR=str(work / "state"))
    for name in DROPPED_VARS:
        os.environ.pop(name, None)

    start = time.perf_counter()
    capture = await anyio.to_thread.run_sync(lambda: run_capture(patch_ws, env=env, cargo_args=["-q"]))
    capture_ms = ms_since(start)
    if not capture.ok:
        raise SystemExit(f"thinpatch capture failed with exit {capture.exit_code}")
    start = time.perf_counter()
    await timed_cargo_build(cargo_ws, env)  # the untimed baseline build; figure kept for context
    cargo_fresh_ms = ms_since(start)

    patch_source, cargo_source = EditableSource(patch_ws), EditableSource(cargo_ws)
    patcher = open_patcher(patch_ws, capture.capture_root)

    # First patch: same edit flow, but the Patcher parses the host (cold, empty disk cache) too.
    start = time.perf_counter()
    patch_source.edit("r0")
    first = await patcher.patch()
    first_wall_ms = ms_since(start)
    host = await patcher.host()
    first_symbols = per_patch_symbol_work(patcher, host, first)

    patch_wall, cargo_wall, patch_rounds, cargo_rounds = [], [], [], []
    split = {"rustc_ms": [], "link_ms": [], "verify_ms": [], "total_ms": []}
    symbol_work = {"patch_parse_ms": [], "jump_table_ms": [], "load_check_ms": []}
    last_symbols = first_symbols

    async def patch_round(n: int) -> None:
        nonlocal last_symbols
        start = time.perf_counter()
        patch_source.edit(f"r{n}")
        result = await patcher.patch()
        wall = ms_since(start)
        require_string(Path(result.lib), f"app v1 r{n} ")
        patch_wall.append(wall)
        for key in split:
            split[key].append(result.timings[key])
        last_symbols = per_patch_symbol_work(patcher, host, result)
        for key in symbol_work:
            symbol_work[key].append(last_symbols[key])
        patch_rounds.append({"round": n, "wall_ms": wall, **{k: result.timings[k] for k in split},
                             "patch_number": result.patch_number, "functions_mapped": len(result.jump_table.map)})

    async def cargo_round(n: int) -> None:
        start = time.perf_counter()
        cargo_source.edit(f"c{n}")
        await timed_cargo_build(cargo_ws, env)
        wall = ms_since(start)
        require_string(cargo_ws / "target" / "debug" / "livehost", f"app v1 c{n} ")
        cargo_wall.append(wall)
        cargo_rounds.append({"round": n, "wall_ms": wall})

    for n in range(1, rounds + 1):
        steps = (patch_round, cargo_round) if n % 2 else (cargo_round, patch_round)
        for step in steps:
            await step(n)

    host_path = host_binary(patcher.captures)
    parse = host_parse_figures(host_path, patcher.symbol_cache_dir, max(3, rounds))
    parse["host_libraries"] = [t.path for t in host.libraries]

    patch_median = statistics.median(patch_wall)
    cargo_median = statistics.median(cargo_wall)
    return {
        "benchmark": "patch",
        "fixture": "tests/fixtures/livehost",
        "edit": f"{EDITED_FILE}: {ORIGINAL_LINE} -> round-numbered string",
        "rounds": rounds,
        "machine": machine_info,
        "setup": {"capture_ms": capture_ms, "cargo_fresh_build_ms": cargo_fresh_ms,
                  "crates_captured": [key.label for key in capture.captured]},
        "first_patch": {"wall_ms": first_wall_ms, **first.timings, "host_parse_ms": host.parse_ms, **first_symbols},
        "patch": {"wall": summary(patch_wall), **{k: summary(v) for k, v in split.items()}, "runs": patch_rounds},
        "cargo_build": {"wall": summary(cargo_wall), "runs": cargo_rounds},
        "ratio_cargo_over_patch_median": cargo_median / patch_median,
        "symbols": {
            "host": parse,
            "per_patch": {k: summary(v) for k, v in symbol_work.items()},
            "patch_symbols": last_symbols["patch_symbols"],
            "patch_lib_bytes": last_symbols["lib_bytes"],
        },
    }


def print_report(r: dict) -> None:
    m = r["machine"]
    print(f"machine: {m['nproc']} CPUs, {m['cpu']}, {m['system']}; {m['rustc']}; Python {m['python']}")
    print(f"date: {m['date']}; load average at start: {', '.join(f'{x:.2f}' for x in m['load_average_at_start'])}")
    setup = r["setup"]
    print(f"fixture: {r['fixture']}; capture {setup['capture_ms'] / 1000:.2f} s "
          f"(crates {', '.join(setup['crates_captured'])}); "
          f"fresh cargo build {setup['cargo_fresh_build_ms'] / 1000:.2f} s")
    print(f"edit: {r['edit']}")
    print()
    first = r["first_patch"]
    print(
        f"first patch (the Patcher also parses the host): wall {first['wall_ms']:.0f} ms; host parse "
        f"{first['host_parse_ms']:.0f}, rustc {first['rustc_ms']:.0f}, link {first['link_ms']:.0f}, "
        f"verify {first['verify_ms']:.0f} ms (Patcher total {first['total_ms']:.0f} ms)"
    )
    print()
    runs = lambda s: ", ".join(f"{x:.0f}" for x in s["runs_ms"])  # noqa: E731
    print(f"{r['rounds']} rounds, edit -> done (ms)          median      min   every run")
    rows = [
        ("patch library (wall)", r["patch"]["wall"]),
        ("  rustc", r["patch"]["rustc_ms"]),
        ("  link", r["patch"]["link_ms"]),
        ("  verify", r["patch"]["verify_ms"]),
        ("  Patcher total", r["patch"]["total_ms"]),
        ("cargo build (incremental)", r["cargo_build"]["wall"]),
    ]
    for label, s in rows:
        print(f"  {label:<34}{s['median_ms']:>8.0f} {s['min_ms']:>8.0f}   {runs(s)}")
    print(f"  cargo build median / patch median: {r['ratio_cargo_over_patch_median']:.1f}x")
    print()
    sym = r["symbols"]
    host = sym["host"]
    fine = lambda s: ", ".join(f"{x:.2f}" for x in s["runs_ms"])  # noqa: E731
    print(
        f"host binary {Path(host['binary']).name}: {host['binary_bytes'] / 1e6:.1f} MB, {host['symbols']} symbols"
        f" (+ {len(host['host_libraries'])} loaded libraries)"
    )
    print("  (ms)                              median      min   every run")
    for label, key in (
        ("cold parse (read_symbols)", "cold_parse"),
        ("from disk cache", "from_disk_cache"),
        ("from memory", "from_memory"),
    ):
        s = host[key]
        print(f"  {label:<32}{s['median_ms']:>8.3f} {s['min_ms']:>8.3f}   {fine(s)}")
    print(f"per patch ({sym['patch_symbols']} symbols, {sym['patch_lib_bytes'] / 1e3:.0f} kB library):")
    for label, key in (
        ("parse patch library", "patch_parse_ms"),
        ("jump table", "jump_table_ms"),
        ("load check", "load_check_ms"),
    ):
        s = sym["per_patch"][key]
        print(f"  {label:<32}{s['median_ms']:>8.3f} {s['min_ms']:>8.3f}   {fine(s)}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=5, help="edit rounds after the first patch (default 5)")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of text")
    args = parser.parse_args()
    if args.rounds < 1:
        parser.error("--rounds must be at least 1")
    with tempfile.TemporaryDirectory(prefix="thinpatch-bench-patch-") as tmp:
        results = anyio.run(bench, Path(tmp), args.rounds)
    if args.json:
        print(json.dumps(results, indent=1))
    else:
        print_report(results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
