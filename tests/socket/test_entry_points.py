"""Hot entry points reported by programs, over real sockets: who may report them, how the
server keeps them per connection, the union per binary, the notification, and the limits.
Every line the daemon sends is checked against the schema."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import anyio
import pytest

from daemon.socket.entry_points import ReportedEntryPoints
from daemon.socket.protocol import EntryPoint, RequestError
from tests.support.protocol_harness import FakeEngine, RawClient, running_server

BUILD_ID = "f804d21ea4552fbea2211314b12d749a464b8b52"
OTHER_BUILD_ID = "00112233445566778899aabbccddeeff00112233"


def entry(
    offset: int, kind: str = "closure", name: str = "app::main::{{closure}}", returns: str = "()"
) -> dict[str, Any]:
    return {"offset": offset, "kind": kind, "name": name, "returns": returns}


async def wait_until(predicate, timeout: float = 5.0) -> None:
    with anyio.fail_after(timeout):
        while not predicate():
            await anyio.sleep(0.01)


@pytest.mark.asyncio
async def test_a_program_reports_entry_points_and_they_are_kept_once_with_its_pid(sock_path: Path) -> None:
    async with running_server(FakeEngine(), sock_path) as server:
        async with RawClient.connect(sock_path) as program:
            await program.request({"type": "subscribe", "pid": 4242, "build_id": BUILD_ID})
            first = [entry(-1234, returns="alloc::string::String"), entry(5120, "fn", "fn(u32) -> u32", "u32")]
            assert (await program.request({"type": "entry-points", "entries": first}))["type"] == "ok"
            again = [entry(5120, "fn", "fn(u32) -> u32", "u32"), entry(64, "pointer-sized-closure")]
            assert (await program.request({"type": "entry-points", "entries": again}))["type"] == "ok"
            assert server.entry_points(BUILD_ID) == [
                EntryPoint(-1234, "closure", "app::main::{{closure}}", "alloc::string::String", 4242),
                EntryPoint(5120, "fn", "fn(u32) -> u32", "u32", 4242),
                EntryPoint(64, "pointer-sized-closure", "app::main::{{closure}}", "()", 4242),
            ]
            assert server.entry_points(OTHER_BUILD_ID) == []


@pytest.mark.asyncio
async def test_only_a_subscribed_program_may_report_entry_points(sock_path: Path) -> None:
    async with running_server(FakeEngine(), sock_path) as server:
        async with RawClient.connect(sock_path) as stranger, RawClient.connect(sock_path) as observer:
            request = {"type": "entry-points", "entries": [entry(1)]}
            refused = await stranger.request(request)
            assert refused["type"] == "error" and "subscribe with 'pid' or 'build_id'" in refused["message"]
            await observer.request({"type": "subscribe", "workspace": "/srv/demo-workspace"})
            refused = await observer.request(request)
            assert refused["type"] == "error" and "a program's" in refused["message"]
            # A bad entry is refused before anything is kept, with the request's seq.
            bad = await observer.request({"type": "entry-points", "entries": [entry(1, kind="async")]})
            assert bad["type"] == "error" and "'kind' must be one of" in bad["message"]
        async with RawClient.connect(sock_path) as by_build_id:
            await by_build_id.request({"type": "subscribe", "build_id": BUILD_ID})
            assert (await by_build_id.request(request))["type"] == "ok"
            assert server.entry_points(BUILD_ID) == [EntryPoint(1, "closure", "app::main::{{closure}}", "()", None)]


@pytest.mark.asyncio
async def test_a_binary_has_the_union_of_its_live_processes_and_a_process_takes_its_own_away(
    sock_path: Path,
) -> None:
    async with running_server(FakeEngine(), sock_path) as server:
        async with RawClient.connect(sock_path) as first, RawClient.connect(sock_path) as other_binary:
            await first.request({"type": "subscribe", "pid": 100, "build_id": BUILD_ID})
            await first.request({"type": "entry-points", "entries": [entry(16), entry(32)]})
            await other_binary.request({"type": "subscribe", "pid": 300, "build_id": OTHER_BUILD_ID})
            await other_binary.request({"type": "entry-points", "entries": [entry(999)]})
            async with RawClient.connect(sock_path) as second:
                await second.request({"type": "subscribe", "pid": 200, "build_id": BUILD_ID})
                await second.request({"type": "entry-points", "entries": [entry(32), entry(48)]})
                assert [(e.pid, e.offset) for e in server.entry_points(BUILD_ID)] == [
                    (100, 16), (100, 32), (200, 32), (200, 48),
                ]
            await wait_until(lambda: server.client_count == 2)
            assert [(e.pid, e.offset) for e in server.entry_points(BUILD_ID)] == [(100, 16), (100, 32)]
            assert [(e.pid, e.offset) for e in server.entry_points(OTHER_BUILD_ID)] == [(300, 999)]
            # Subscribing again starts afresh: the program sends its entry points after each `subscribed`.
            await first.request({"type": "subscribe", "pid": 100, "build_id": BUILD_ID})
            assert server.entry_points(BUILD_ID) == []
            await first.request({"type": "entry-points", "entries": [entry(16)]})
            assert [(e.pid, e.offset) for e in server.entry_points(BUILD_ID)] == [(100, 16)]
            # Becoming an observer takes the process's entries out of its binary's.
            await first.request({"type": "subscribe"})
            assert server.entry_points(BUILD_ID) == []


@pytest.mark.asyncio
async def test_the_engine_hears_of_new_entry_points_only(sock_path: Path) -> None:
    heard: list[tuple[str, list[EntryPoint]]] = []
    async with running_server(FakeEngine(), sock_path) as server:
        server.on_entry_points = lambda build_id, new: heard.append((build_id, new))
        async with RawClient.connect(sock_path) as program:
            await program.request({"type": "subscribe", "pid": 7, "build_id": BUILD_ID})
            await program.request({"type": "entry-points", "entries": [entry(16), entry(16)]})
            await program.request({"type": "entry-points", "entries": [entry(16)]})
            await program.request({"type": "entry-points", "entries": [entry(16), entry(24, "fn", "fn()")]})
            assert heard == [
                (BUILD_ID, [EntryPoint(16, "closure", "app::main::{{closure}}", "()", 7)]),
                (BUILD_ID, [EntryPoint(24, "fn", "fn()", "()", 7)]),
            ]

            def broken(build_id: str, new: list[EntryPoint]) -> None:
                raise RuntimeError("engine trouble")

            server.on_entry_points = broken
            reply = await program.request({"type": "entry-points", "entries": [entry(40)]})
            assert reply["type"] == "ok"  # the engine's failure is not the program's
            assert [e.offset for e in server.entry_points(BUILD_ID)] == [16, 24, 40]


@pytest.mark.asyncio
async def test_a_connection_cannot_report_more_than_the_limit(sock_path: Path) -> None:
    async with running_server(FakeEngine(), sock_path) as server:
        async with RawClient.connect(sock_path) as program:
            await program.request({"type": "subscribe", "pid": 9, "build_id": BUILD_ID})
            for start in range(0, 4096, 1024):
                batch = [entry(offset) for offset in range(start, start + 1024)]
                assert (await program.request({"type": "entry-points", "entries": batch}))["type"] == "ok"
            over = await program.request({"type": "entry-points", "entries": [entry(5000), entry(5001)]})
            assert over["type"] == "error" and "too many entry points" in over["message"]
            # Known ones are still fine, and nothing of the refused request was kept.
            assert (await program.request({"type": "entry-points", "entries": [entry(7)]}))["type"] == "ok"
            assert len(server.entry_points(BUILD_ID)) == 4096
            assert 5000 not in {e.offset for e in server.entry_points(BUILD_ID)}


def test_the_name_budget_refuses_a_request_whole() -> None:
    table = ReportedEntryPoints(max_entries=10, max_bytes=100)
    long_name = EntryPoint(1, "closure", "n" * 40, "()", 5)
    assert table.add([long_name]) == [long_name]
    with pytest.raises(RequestError, match="more than 100 bytes"):
        table.add([EntryPoint(2, "closure", "m" * 40, "()", 5), EntryPoint(3, "closure", "k" * 40, "()", 5)])
    assert list(table) == [long_name]
    with pytest.raises(RequestError, match="may report 10, and these would make 11"):
        table.add([EntryPoint(offset, "fn", "f", "()", 5) for offset in range(100, 110)])
    assert len(table) == 1
