"""Profile the change analysis of the large workspace's bin edit, outside the daemon.

Builds two patches of the bin edit once (two round-numbered banners) with a `Patcher` of its
own session, keeps each patch's objects, puts the source back, and then runs only the
analysis (`Patcher._analyse`) on them: first as the first patch after a capture (no layout
cache on disk, nothing in memory), then as the first after a daemon restart (disk caches,
empty memory), then alternating the two patches with a warm `Patcher`, as a run of saves
does (each round's rewritten objects are new to the caches). Prints each phase's times, and
with --profile the top of cProfile's table for the warm rounds. Then times the verify step
(`Patcher._verify`) on the two patch libraries.

`--edit string` (default) is the benchmark's bin edit, a changed string; `--edit code` makes the
two patches' banner() differ in size (one or two more format arguments, each on a line of its
own), so the rewritten unit's code, debug info and line tables all change.

    python bench/profile_analysis.py [--work DIR] [--rounds N] [--edit string|code] [--profile] [--json]

Needs the large workspace built and captured by bench/bench_large.py (its `daemon` copy).
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import hashlib
import io
import json
import pstats
import resource
import shutil
import statistics
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import anyio

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH.parent))
sys.path.insert(0, str(BENCH))

from bench_large import ENTRY_FUNCTION, Sources, default_work_dir, entry_point  # noqa: E402
from generate import BIN_MARKER  # noqa: E402

from daemon.build.crate_plans import resolve_top  # noqa: E402
from daemon.build.rebuild import CrateBuild, PatchBuild  # noqa: E402
from daemon.service.patcher import Patcher, open_patcher  # noqa: E402
from daemon.socket.protocol import EntryPoint  # noqa: E402


class _Patcher(Patcher):
    """A patcher whose layout cache lives where the profile says (not beside the capture)."""

    layouts_root: Path | None = None

    def _program_types(self, baseline):  # type: ignore[no-untyped-def]
        if self.layouts_root is None:
            return super()._program_types(baseline)
        real = self.capture_root
        try:
            self.capture_root = self.layouts_root
            return super()._program_types(baseline)
        finally:
            self.capture_root = real


def _patcher(workspace: Path, session: Path, layouts_root: Path | None) -> _Patcher:
    opened = open_patcher(workspace, workspace / "target" / "thinpatch", session_root=session)
    patcher = _Patcher(workspace, opened.captures, opened.session)
    patcher.layouts_root = layouts_root
    return patcher


# The bin edit's call, as generated; `--edit code` makes each patch's banner() a different size
# and moves every line below it (its debug info and line tables change, not only a string).
BANNER_CALL = f'format!("{{}} / {{}}", "{BIN_MARKER}", benchweb::web_banner())'


def _code_edit(source: Sources, tag: str) -> str:
    extra = {"profile-warm-up": 0, "profile-a": 1, "profile-b": 2}[tag]
    call = (
        f'format!("{{}} / {{}}{"{}" * extra}", "{BIN_MARKER} {tag}", benchweb::web_banner()'
        + "".join(f",\n        {n}u32 * 7" for n in range(extra))
        + ")"
    )
    text = source.original["bin"]
    if BANNER_CALL not in text:
        raise SystemExit(f"bench/large/generate.py no longer writes {BANNER_CALL}: update --edit code")
    return text.replace(BANNER_CALL, call)


def _save(source: Sources, workspace: Path, edit: str, tag: str) -> None:
    if edit == "string":
        source.save("bin", tag)
        return
    path = workspace / "app" / "src" / "main.rs"
    temp = path.with_name(f".{path.name}.tmp-save")
    temp.write_text(_code_edit(source, tag))
    temp.replace(path)


async def _build_two(
    workspace: Path, session: Path, keep: Path, entries: list[EntryPoint], edit: str = "string"
) -> list[tuple]:
    """Two patches of the bin edit after a first one; their compiled crates, with objects copied into ``keep``."""
    patcher = _patcher(workspace, session, None)
    source = Sources(workspace)
    path = workspace / "app" / "src" / "main.rs"
    original = path.read_bytes()
    kept: list[tuple] = []
    seen: list[tuple[CrateBuild, ...]] = []
    real = patcher._analyse

    def spy(host, program, crates, entries):  # type: ignore[no-untyped-def]
        seen.append(tuple(crates))
        return real(host, program, crates, entries)

    patcher._analyse = spy  # type: ignore[method-assign]
    try:
        for tag in ("profile-warm-up", "profile-a", "profile-b"):
            _save(source, workspace, edit, tag)
            result = await patcher.patch(entries=entries)
            if tag == "profile-warm-up":
                continue  # the session's first build compiles every unit afresh
            crates = []
            for crate in seen[-1]:
                place = keep / tag / crate.key.name
                place.mkdir(parents=True, exist_ok=True)
                copies = []
                for obj in crate.objects:
                    shutil.copy2(obj, place / obj.name)
                    copies.append(place / obj.name)
                crates.append(replace(crate, objects=tuple(copies)))
            library = keep / tag / Path(result.lib).name
            shutil.copy2(result.lib, library)
            kept.append((tuple(crates), result.verdict.verdict, [c.function for c in result.verdict.changes], library))
    finally:
        path.write_bytes(original)
    return kept


def _rewritten(a: tuple[CrateBuild, ...], b: tuple[CrateBuild, ...]) -> list[Path]:
    """The objects of either patch whose bytes the other patch has in none of its objects
    (rustc names a unit's object anew in every build, so names can't be compared)."""
    contents = [{p.read_bytes(): p for crate in side for p in crate.objects} for side in (a, b)]
    return [path for mine, theirs in (contents, contents[::-1]) for data, path in mine.items() if data not in theirs]


def _forget(patcher: Patcher, paths: list[Path]) -> None:
    """Drop what the patcher's caches know of ``paths``' contents."""
    for path in paths:
        content = hashlib.blake2b(path.read_bytes(), digest_size=16).hexdigest()
        patcher._prints._by_content.pop(content, None)


class _GcTime:
    """Time spent in the garbage collector (all generations) while it is installed."""

    def __init__(self) -> None:
        self.ms, self._start = 0.0, 0.0

    def __call__(self, phase: str, info: dict) -> None:
        if phase == "start":
            self._start = time.perf_counter()
        else:
            self.ms += (time.perf_counter() - self._start) * 1000


def _timed(patcher: _Patcher, host, top, crates, entries) -> dict:  # type: ignore[no-untyped-def]
    collector = _GcTime()
    gc.callbacks.append(collector)
    started = time.perf_counter()
    cpu = time.thread_time()
    try:
        verdict, _ = patcher._analyse(host, top, crates, entries)
    finally:
        gc.callbacks.remove(collector)
    return {
        "gc_ms": round(collector.ms, 2),
        "wall_ms": (time.perf_counter() - started) * 1000,
        "cpu_ms": (time.thread_time() - cpu) * 1000,
        "verdict": verdict.verdict,
        **{k: round(v, 2) for k, v in verdict.timings.items()},
    }


def _timed_verify(patcher: _Patcher, host, top, built: tuple, profiler: cProfile.Profile | None) -> float:  # type: ignore[no-untyped-def]
    """The verify step (load check, jump table, statics) on a kept patch library, in ms."""
    crates, _, _, library = built
    build = PatchBuild(library, 1, top, (top,), tuple(o for c in crates for o in c.objects), crates, 0.0, 0.0)
    if profiler is not None:
        profiler.enable()
    started = time.perf_counter()
    patcher._verify(host, build)
    elapsed = (time.perf_counter() - started) * 1000
    if profiler is not None:
        profiler.disable()
    return elapsed


async def profile(work: Path, rounds: int, with_profile: bool, keep: bool = False, edit: str = "string") -> dict:
    workspace = work / "daemon"
    binary = workspace / "target" / "debug" / "benchapp"
    raw = entry_point(binary)
    entries = [EntryPoint(raw["offset"], raw["kind"], raw["name"], raw["returns"])]
    scratch = tempfile.mkdtemp(prefix="thinpatch-profile-")
    try:
        root = Path(scratch)
        built = await _build_two(workspace, root / "session", root / "objects", entries, edit)
        out: dict = {"scratch": scratch, "entry": ENTRY_FUNCTION, "edit": edit}
        out["built"] = [{"verdict": v, "changes": c} for _, v, c, _ in built]
        layouts_root = root / "capture-root"
        layouts_root.mkdir()

        async def phase(fresh_layouts: bool) -> tuple[_Patcher, dict]:
            patcher = _patcher(workspace, root / "session", layouts_root)
            if fresh_layouts:
                shutil.rmtree(layouts_root / "layouts", ignore_errors=True)
            host = await patcher.host()
            top = resolve_top(patcher.captures).key
            patcher._entries(host, entries)  # the function index: built when the program reports entries
            return patcher, _timed(patcher, host, top, built[0][0], entries)

        _, out["first_after_capture"] = await phase(True)
        patcher, out["first_after_restart"] = await phase(False)
        host = await patcher.host()
        top = resolve_top(patcher.captures).key
        rewritten = _rewritten(built[0][0], built[1][0])
        out["rewritten_objects"] = sorted(f"{path.name} ({path.stat().st_size} bytes)" for path in rewritten)
        warm = []
        profiler = cProfile.Profile() if with_profile else None
        for n in range(rounds):
            crates = built[(n + 1) % 2][0]
            _forget(patcher, rewritten)  # as in a run of saves, rustc's rewritten units are new
            if profiler is not None:
                profiler.enable()
            warm.append(_timed(patcher, host, top, crates, entries))
            if profiler is not None:
                profiler.disable()
        out["warm"] = warm
        out["max_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        out["warm_median_wall_ms"] = statistics.median(r["wall_ms"] for r in warm)
        out["warm_median_cpu_ms"] = statistics.median(r["cpu_ms"] for r in warm)
        verify_profiler = cProfile.Profile() if with_profile else None
        out["verify"] = [
            _timed_verify(patcher, host, top, built[(n + 1) % 2], verify_profiler) for n in range(rounds)
        ]
        out["verify_median_ms"] = statistics.median(out["verify"])
        if verify_profiler is not None:
            text = io.StringIO()
            pstats.Stats(verify_profiler, stream=text).sort_stats("cumulative").print_stats(30)
            out["verify_profile"] = text.getvalue()
        if profiler is not None:
            text = io.StringIO()
            pstats.Stats(profiler, stream=text).sort_stats("cumulative").print_stats(40)
            pstats.Stats(profiler, stream=text).sort_stats("tottime").print_stats(25)
            out["profile"] = text.getvalue()
    finally:
        if not keep:
            shutil.rmtree(scratch, ignore_errors=True)
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", type=Path, default=default_work_dir())
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--profile", action="store_true", help="cProfile the warm rounds")
    parser.add_argument("--keep", action="store_true", help="keep the built objects (the scratch directory)")
    parser.add_argument(
        "--edit", choices=("string", "code"), default="string",
        help="string: the benchmark's bin edit (banner()'s string); code: banner() grows by one or two "
        "format arguments on lines of their own, moving every line below it",
    )
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    result = anyio.run(profile, args.work.resolve(), args.rounds, args.profile, args.keep, args.edit)
    if args.json:
        print(json.dumps(result, indent=1))
        return 0
    for label in ("first_after_capture", "first_after_restart"):
        r = result[label]
        print(f"{label.replace('_', ' ')}: {r['wall_ms']:.1f} ms wall, {r['cpu_ms']:.1f} ms CPU; {r}")
    for r in result["warm"]:
        print(f"warm: {r['wall_ms']:.1f} ms wall, {r['cpu_ms']:.1f} ms CPU; {r}")
    print(f"warm median: {result['warm_median_wall_ms']:.1f} ms wall, {result['warm_median_cpu_ms']:.1f} ms CPU")
    print(f"verify: median {result['verify_median_ms']:.1f} ms; " + ", ".join(f"{v:.1f}" for v in result["verify"]))
    print(f"peak RSS of this process: {result['max_rss_mib']:.0f} MiB")
    if "profile" in result:
        print(result["profile"])
        print(result["verify_profile"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
