"""A real Rust program built with thinpatch-client reports its hot entry points to a real
server: the kinds and names it calls, and offsets that, added to the static address of
`main` in its binary, are the static addresses of the functions it calls through."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import anyio
import pytest

from daemon.binary.build_id import read_build_id
from daemon.binary.demangle import demangle
from daemon.binary.symbols import FUNCTION, read_symbols
from daemon.socket.protocol import EntryPoint
from tests.support.protocol_harness import FakeEngine, running_server

CRATE = Path(__file__).parents[2] / "daemon" / "data" / "thinpatch-client"

PROGRAM = r"""
use std::io::BufRead;

fn step(x: u32) -> u32 {
    x + 1
}

fn update(world: &mut u64, dt: u64) {
    *world += dt;
}

async fn handle(x: u32) -> u32 {
    x * 2
}

fn main() {
    thinpatch_client::connect();
    let (a, b) = (20u64, 22u64);
    let mut world = 0u64;
    let pointer: fn(u32) -> u32 = step;
    let mut total = 0u64;
    for _ in 0..3 {
        total += thinpatch_client::call(|| 7u64); // zero-sized closure
        total += thinpatch_client::call(move || a + b); // two words
        total += thinpatch_client::call(|| a * 2); // one reference: pointer-sized
        total += thinpatch_client::HotFn::current(pointer).call((1,)) as u64; // fn pointer
        thinpatch_client::HotFn::current(update).call((&mut world, 1)); // fn item
    }
    println!("READY {total} {world}");
    // Once told, call one more entry point while connected.
    let mut line = String::new();
    let _ = std::io::stdin().lock().read_line(&mut line);
    let _future = thinpatch_client::call(|| handle(3));
    println!("CALLED");
    let _ = std::io::stdin().lock().read_line(&mut line);
}
"""


@pytest.fixture(scope="module")
def entry_program(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The program above, built with `main` exported (as `thinpatch capture` builds)."""
    root = tmp_path_factory.mktemp("entry program")
    (root / "src").mkdir()
    (root / "Cargo.toml").write_text(
        '[package]\nname = "entryapp"\nversion = "0.1.0"\nedition = "2021"\n\n'
        f"[dependencies]\nthinpatch-client = {{ path = {str(CRATE)!r} }}\n"
    )
    (root / "src" / "main.rs").write_text(PROGRAM)
    env = dict(
        os.environ,
        CARGO_TARGET_DIR=str(root / "target"),
        RUSTFLAGS="-C link-arg=-Wl,--export-dynamic",
    )
    built = subprocess.run(
        ["cargo", "build", "--offline", "--quiet"], cwd=root, env=env, capture_output=True, text=True, timeout=300
    )
    assert built.returncode == 0, built.stderr
    return root / "target" / "debug" / "entryapp"


async def wait_for(predicate, what: str, timeout: float = 20.0) -> None:
    with anyio.fail_after(timeout):
        while not predicate():
            await anyio.sleep(0.02)


@pytest.mark.cargo
@pytest.mark.asyncio
async def test_a_real_program_reports_its_entry_points(entry_program: Path, sock_path: Path) -> None:
    build_id = read_build_id(entry_program)
    assert build_id
    symbols = read_symbols(entry_program)
    (main,) = {s.address for s in symbols.defined(FUNCTION) if s.name == "main"}  # .symtab and .dynsym agree
    functions = {s.address: s for s in symbols.defined(FUNCTION)}

    async with running_server(FakeEngine(), sock_path) as server:
        env = dict(os.environ, THINPATCH_SOCKET=str(sock_path))
        process = await anyio.open_process([str(entry_program)], env=env)
        try:
            await wait_for(lambda: len(server.entry_points(build_id)) >= 5, "the first five entry points")
            first = server.entry_points(build_id)
            assert len(first) == 5, first
            assert process.stdin is not None
            await process.stdin.send(b"go\n")
            await wait_for(lambda: len(server.entry_points(build_id)) == 6, "the entry called later")
            entries = server.entry_points(build_id)
            assert entries[:5] == first
        finally:
            process.kill()
            await process.wait()

    assert {e.pid for e in entries} == {process.pid}

    def function_at(entry: EntryPoint) -> str:
        symbol = functions.get(main + entry.offset)
        assert symbol is not None, f"no function at main + {entry.offset} for {entry}"
        return demangle(symbol.name)

    closure = "entryapp::main::{{closure}}"
    by_kind = [(e.kind, e.name, e.returns) for e in entries]
    assert by_kind == [
        ("closure", closure, "u64"),
        ("closure", closure, "u64"),
        ("pointer-sized-closure", closure, "u64"),
        ("fn", "fn(u32) -> u32", "u32"),
        ("closure", "entryapp::update", "()"),
        ("closure", closure, "entryapp::handle::{{closure}}"),  # an async fn's future
    ]
    # A fn pointer is its function; every other entry is its callable's `call_it`.
    assert function_at(entries[3]) == "entryapp::step"
    for entry in entries[:3] + entries[4:]:
        assert function_at(entry).endswith(">::call_it"), function_at(entry)
        assert "as thinpatch_client::hot::HotFunction<" in function_at(entry)
    # (Legacy mangling names the impl's `T`, not the closure: the offsets tell them apart.)
    assert "HotFunction<(A,B)," in function_at(entries[4])  # update's two arguments
    assert len({e.offset for e in entries}) == 6
