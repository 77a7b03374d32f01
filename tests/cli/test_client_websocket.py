"""thinpatch-client's remote mode against a real WebSocket server (the `websockets` library)
scripted as the daemon's endpoint: a real Rust program built with the crate checks in with its
token and build ID, answers pings (also in the middle of a fragmented message), receives a real
patch library in binary chunks, checks its SHA-256, loads it and runs the new code; a damaged
patch is reported as not applied, and a close frame's reason reaches the program's stderr."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import stat
import struct
import subprocess
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from websockets.asyncio.server import ServerConnection, serve

from daemon.binary.build_id import read_build_id
from daemon.binary.demangle import demangle
from daemon.binary.symbols import FUNCTION, read_symbols

CRATE = Path(__file__).parents[2] / "daemon" / "data" / "thinpatch-client"
CHUNK = 1 << 20
TOKEN = "5f" * 32
WRONG_TOKEN = "wrong token: use the token that `thinpatch token` prints on the host"

PROGRAM = r"""
use std::io::{BufRead, Write};
use thinpatch_client::{Client, Event, HotFn};

#[inline(never)]
fn answer() -> u64 {
    1
}

fn report(event: &Event) {
    match event {
        Event::Subscribed { socket } => println!("SUBSCRIBED {}", socket.display()),
        Event::Patched { id, entries } => println!("PATCHED id={id} entries={entries}"),
        Event::PatchFailed { id, message } => println!("PATCH-ERROR id={id} {message}"),
        Event::Refused { reason } => println!("REFUSED {reason}"),
        Event::Disconnected { reason } => println!("DISCONNECTED {reason}"),
        _ => {}
    }
    std::io::stdout().flush().ok();
}

fn main() {
    let hot_answer: fn() -> u64 = answer;
    let args: Vec<String> = std::env::args().collect();
    let mut client = Client::new().on_event(report);
    // `remoteapp ADDRESS TOKEN` uses Client::remote; without arguments, THINPATCH_ADDR.
    if let [_, address, token] = &args[..] {
        client = client.remote(address, token);
    }
    client.spawn().expect("a listener thread");
    println!("READY pid={}", std::process::id());
    std::io::stdout().flush().ok();
    for line in std::io::stdin().lock().lines() {
        match line.as_deref().unwrap_or("quit").trim() {
            "ask" => println!("ANSWER {}", HotFn::current(hot_answer).call(())),
            "quit" => break,
            _ => {}
        }
        std::io::stdout().flush().ok();
    }
}
"""

# A patch library as the daemon's would be for this program: it exports `main` (the anchor the
# jump table is rebased on) and the new version of `answer`. The padding makes it several chunks.
PATCH = r"""
#[no_mangle]
pub static THINPATCH_TEST_PADDING: [u8; 1_600_000] = [7; 1_600_000];

#[no_mangle]
pub fn thinpatch_test_new_answer() -> u64 {
    42 + (THINPATCH_TEST_PADDING[0] as u64) * 0
}

#[no_mangle]
pub extern "C" fn main() -> i32 {
    0
}
"""


class Built:
    def __init__(self, program: Path, library: Path):
        self.program = program
        self.library = library
        self.build_id = read_build_id(program)
        functions = list(read_symbols(program).defined(FUNCTION))
        (program_main,) = {s.address for s in functions if s.name == "main"}
        (old,) = {s.address for s in functions if demangle(s.name).startswith("remoteapp::answer")}
        patch = {s.name: s.address for s in read_symbols(library).defined(FUNCTION)}
        self.jump_table: dict[str, Any] = {
            "lib": "/on/the/host/only/patch-7.so",
            "map": {str(old): patch["thinpatch_test_new_answer"]},
            "aslr_reference": program_main,
            "new_base_address": patch["main"],
            "ifunc_count": 0,
        }


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Built:
    """The program, built with `main` exported as `thinpatch capture` builds, and its patch."""
    root = tmp_path_factory.mktemp("remote program")
    (root / "src").mkdir()
    (root / "Cargo.toml").write_text(
        '[package]\nname = "remoteapp"\nversion = "0.1.0"\nedition = "2021"\n\n'
        f"[dependencies]\nthinpatch-client = {{ path = {str(CRATE)!r} }}\n"
    )
    (root / "src" / "main.rs").write_text(PROGRAM)
    env = dict(os.environ, CARGO_TARGET_DIR=str(root / "target"), RUSTFLAGS="-C link-arg=-Wl,--export-dynamic")
    build = ["cargo", "build", "--offline", "--quiet"]
    done = subprocess.run(build, cwd=root, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    (root / "patch.rs").write_text(PATCH)
    library = root / "libpatch.so"
    rustc = ["rustc", "--edition", "2021", "--crate-type", "cdylib", "-o", str(library), str(root / "patch.rs")]
    done = subprocess.run(rustc, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    return Built(root / "target" / "debug" / "remoteapp", library)


class Daemon:
    """The daemon's WebSocket endpoint, scripted by the test: each connection is handed to it."""

    def __init__(self) -> None:
        self.connections: asyncio.Queue[ServerConnection] = asyncio.Queue()
        self.port = 0
        self.seq = 0

    async def _handler(self, connection: ServerConnection) -> None:
        await self.connections.put(connection)
        await connection.wait_closed()

    @property
    def address(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    async def accept(self) -> ServerConnection:
        return await asyncio.wait_for(self.connections.get(), 20)

    async def send(self, connection: ServerConnection, message: dict[str, Any]) -> None:
        self.seq += 1
        await connection.send(json.dumps({**message, "seq": self.seq}))

    async def greet(self, connection: ServerConnection) -> dict[str, Any]:
        """Say hello as a remote daemon; the subscribe request."""
        await self.send(connection, {"type": "hello", "protocol": 2, "version": "0.1.0", "pid": 1, "remote": True})
        return await receive(connection, "subscribe")

    async def send_patch(
        self, connection: ServerConnection, patch_id: int, library: bytes, jump_table: dict, sha256: str | None = None
    ) -> int:
        """A `patch-ready` event and its chunk frames; the number of chunks."""
        chunks = max(1, -(-len(library) // CHUNK))
        payload = {
            "size": len(library),
            "sha256": sha256 or hashlib.sha256(library).hexdigest(),
            "chunks": chunks,
            "file": f"patch-{patch_id}.so",
        }
        event = {"type": "patch-ready", "id": patch_id, "lib": jump_table["lib"], "jump_table": jump_table}
        await self.send(connection, {**event, "payload": payload})
        for index in range(chunks):
            header = json.dumps({"id": patch_id, "index": index, "offset": index * CHUNK}).encode()
            data = library[index * CHUNK : (index + 1) * CHUNK]
            await connection.send(struct.pack(">I", len(header)) + header + data)
        return chunks


@asynccontextmanager
async def running_daemon() -> AsyncIterator[Daemon]:
    daemon = Daemon()
    # No automatic pings: the test sends its own and waits for their pongs.
    async with serve(daemon._handler, "127.0.0.1", 0, ping_interval=None, max_size=None) as server:
        daemon.port = next(iter(server.sockets)).getsockname()[1]
        yield daemon


async def receive(connection: ServerConnection, kind: str) -> dict[str, Any]:
    """The next message of type `kind`; each must be a text frame of one JSON object."""
    while True:
        message = await asyncio.wait_for(connection.recv(), 20)
        assert isinstance(message, str), f"a binary frame from the client: {message!r}"
        decoded = json.loads(message)
        if decoded["type"] == kind:
            return decoded


class Program:
    """The Rust program, its stdout and stderr read together line by line."""

    def __init__(self, process: asyncio.subprocess.Process):
        self.process = process
        self.transcript: list[str] = []

    @classmethod
    async def start(cls, binary: Path, env: dict[str, str], *args: str) -> Program:
        process = await asyncio.create_subprocess_exec(
            str(binary),
            *args,
            env=env,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        program = cls(process)
        await program.expect(lambda line: line.startswith("READY"))
        return program

    async def expect(self, wanted: Callable[[str], bool], timeout: float = 20, *, earlier: bool = False) -> str:
        """The next line that is `wanted` (with `earlier`: or the first one said so far)."""
        assert self.process.stdout is not None
        if earlier:
            for line in self.transcript:
                if wanted(line):
                    return line
        async with asyncio.timeout(timeout):
            while True:
                raw = await self.process.stdout.readline()
                assert raw, "the program exited; it said:\n" + "\n".join(self.transcript)
                line = raw.decode().rstrip("\n")
                self.transcript.append(line)
                if wanted(line):
                    return line

    async def ask(self) -> str:
        assert self.process.stdin is not None
        self.process.stdin.write(b"ask\n")
        await self.process.stdin.drain()
        return await self.expect(lambda line: line.startswith("ANSWER"))

    async def stop(self) -> None:
        if self.process.returncode is None:
            self.process.kill()
        await self.process.wait()


def program_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("THINPATCH_ADDR", "THINPATCH_TOKEN", "THINPATCH_CACHE_DIR")}
    return dict(env, TMPDIR=str(tmp_path), **extra)


@pytest.mark.cargo
@pytest.mark.asyncio
async def test_a_program_is_patched_by_a_remote_daemon(built: Built, tmp_path: Path) -> None:
    library = built.library.read_bytes()
    cache = tmp_path / "device cache" / "patches"
    async with running_daemon() as daemon:
        env = program_env(
            tmp_path, THINPATCH_ADDR=daemon.address, THINPATCH_TOKEN=TOKEN, THINPATCH_CACHE_DIR=str(cache)
        )
        program = await Program.start(built.program, env)
        try:
            connection = await daemon.accept()
            assert connection.request is not None
            assert connection.request.path == "/thinpatch"
            assert connection.request.headers["Authorization"] == f"Bearer {TOKEN}"
            subscribe = await daemon.greet(connection)
            assert subscribe["build_id"] == built.build_id
            assert subscribe["pid"] == program.process.pid

            # `subscribed` in three fragments (the last one empty), with a ping between two of them.
            pongs = []

            async def fragments() -> AsyncIterator[str]:
                text = json.dumps({"type": "subscribed", "re": subscribe["seq"], "build_id": built.build_id, "seq": 2})
                yield text[:10]
                pongs.append(await connection.ping(b"mid-message"))
                yield text[10:]

            await connection.send(fragments())
            await program.expect(lambda line: line == f"SUBSCRIBED {daemon.address}/thinpatch")
            await asyncio.wait_for(pongs[0], 10)
            await asyncio.wait_for(await connection.ping(b"keep-alive"), 10)

            assert await program.ask() == "ANSWER 1"
            entries = await receive(connection, "entry-points")
            assert entries["entries"], entries

            chunks = await daemon.send_patch(connection, 7, library, built.jump_table)
            assert chunks > 1, "the library is several chunks"
            result = await receive(connection, "patch-result")
            assert (result["id"], result["applied"], result["pid"]) == (7, True, program.process.pid), result
            await program.expect(lambda line: line == "PATCHED id=7 entries=1")
            assert await program.ask() == "ANSWER 42"
            # The bytes were put in the cache directory, which was made private.
            assert (cache / "patch-7.so").read_bytes() == library
            assert stat.S_IMODE(cache.stat().st_mode) == 0o700
            assert sorted(p.name for p in cache.iterdir()) == ["patch-7.so"]

            # Damaged bytes: reported as not applied, with the reason; the last patch stays.
            await daemon.send_patch(connection, 8, library, built.jump_table, sha256="0" * 64)
            result = await receive(connection, "patch-result")
            assert (result["id"], result["applied"]) == (8, False), result
            assert "sha256" in result["message"], result
            await program.expect(lambda line: line.startswith("PATCH-ERROR id=8") and "sha256" in line)
            assert await program.ask() == "ANSWER 42"
            assert sorted(p.name for p in cache.iterdir()) == ["patch-7.so"]

            # The daemon closes with a reason: the program says it, then reconnects and, as a late
            # subscriber, gets the newest patch replayed: the same bytes, so the library it already
            # loaded is used again (no second copy, with statics of its own).
            await connection.close(1008, "you stopped reading: the daemon's send buffer for you is full")
            await program.expect(lambda line: "closed the connection: you stopped reading" in line)
            again = await daemon.accept()
            subscribe = await daemon.greet(again)
            await daemon.send(again, {"type": "subscribed", "re": subscribe["seq"]})
            await daemon.send_patch(again, 7, library, built.jump_table)
            result = await receive(again, "patch-result")
            assert result["applied"] is True, result
            assert sorted(p.name for p in cache.iterdir()) == ["patch-7.so"]
            assert await program.ask() == "ANSWER 42"

            # A newer patch (other bytes; trailing bytes don't change what an ELF library loads):
            # written beside it, and the older file, already loaded, is removed.
            newer = library + b"\0" * 100
            await daemon.send_patch(again, 9, newer, built.jump_table)
            result = await receive(again, "patch-result")
            assert (result["id"], result["applied"]) == (9, True), result
            assert sorted(p.name for p in cache.iterdir()) == ["patch-9.so"]
            assert (cache / "patch-9.so").read_bytes() == newer
            assert await program.ask() == "ANSWER 42"
        finally:
            await program.stop()
    said = [line for line in program.transcript if line.startswith("thinpatch: ") and "stopped reading" in line]
    assert said == [
        f"thinpatch: {daemon.address}/thinpatch: the daemon closed the connection: you stopped reading: "
        "the daemon's send buffer for you is full"
    ], program.transcript


@pytest.mark.cargo
@pytest.mark.asyncio
async def test_a_wrong_token_is_refused_with_the_daemons_reason_said_once(built: Built, tmp_path: Path) -> None:
    async with running_daemon() as daemon:
        # Client::remote in code, not the environment.
        program = await Program.start(built.program, program_env(tmp_path), daemon.address, "not-the-token")
        try:
            for _ in range(2):
                connection = await daemon.accept()
                assert connection.request is not None
                assert connection.request.headers["Authorization"] == "Bearer not-the-token"
                await connection.close(1008, WRONG_TOKEN)
                await program.expect(lambda line: line.startswith("REFUSED") and WRONG_TOKEN in line)
            assert await program.ask() == "ANSWER 1"
        finally:
            await program.stop()
    said = [line for line in program.transcript if line.startswith("thinpatch: ")]
    assert said == [f"thinpatch: {daemon.address}/thinpatch: the daemon closed the connection: {WRONG_TOKEN}"]


@pytest.mark.cargo
@pytest.mark.asyncio
async def test_no_tls_the_program_says_how_to_reach_the_daemon_instead(built: Built, tmp_path: Path) -> None:
    env = program_env(tmp_path, THINPATCH_ADDR="wss://127.0.0.1:7421")
    program = await Program.start(built.program, env)
    try:
        # The listener may say it before or after the program's first line.
        line = await program.expect(lambda line: line.startswith("thinpatch: "), earlier=True)
        assert "THINPATCH_ADDR: wss://127.0.0.1:7421" in line and "no TLS" in line, line
        assert "ssh -R" in line and "adb reverse" in line, line
        assert await program.ask() == "ANSWER 1"
    finally:
        await program.stop()
