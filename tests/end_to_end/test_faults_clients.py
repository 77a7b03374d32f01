"""Client abuse against the real daemon while it builds patches: connection churn, garbage,
oversized lines, half-open connections and a subscriber that never reads. The daemon's
memory stays bounded, well-behaved subscribers get every event, and it keeps serving."""

from __future__ import annotations

import json
import os
import socket
import threading
import time

import anyio
import pytest

from daemon.socket.client import connect
from tests.support.faults import (
    assert_nothing_lost,
    collect_until,
    daemon_rss_kib,
    is_outcome,
    quiet_mark,
    run,
    set_greeting,
)

pytestmark = pytest.mark.cargo

EDITS = 4


# --------------------------------------------------------------------------- abusers (threads)


def _raw(path) -> socket.socket:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.connect(os.fspath(path))  # blocking: a full listen backlog makes us wait, not fail
    s.settimeout(10)
    return s


def churn(path, stop: threading.Event, counts: dict) -> None:
    """200 clients at a time connecting, half of them reading the hello, all hanging up."""
    while not stop.is_set():
        batch = [_raw(path) for _ in range(200)]
        for i, s in enumerate(batch):
            if i % 2:
                s.recv(4096)
            s.close()
        counts["churned"] = counts.get("churned", 0) + len(batch)


def garbage(path, stop: threading.Event, counts: dict) -> None:
    """Malformed JSON, binary garbage and 10 MiB lines; each gets an error, plainly."""
    payloads = [
        b'{"type": "status", "seq": \n',
        b"\x00\xff\xfe garbage \x80\x81\n",
        b'{"type": "no-such-request", "seq": 7}\n',
        b'["a", "list"]\n',
        b'{"type": "rebuild", "seq": 3, "workspace": 42}\n',
        b"x" * (10 * 1024 * 1024) + b"\n",
    ]
    while not stop.is_set():
        for payload in payloads:
            with _raw(path) as s:
                try:
                    s.sendall(payload)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the oversized line: the daemon hangs up while we still send
                data = b""
                try:
                    while data.count(b"\n") < 2:
                        chunk = s.recv(65536)
                        if not chunk:
                            break
                        data += chunk
                except ConnectionResetError:
                    pass
            lines = [json.loads(line) for line in data.splitlines() if line.strip()]
            assert lines and lines[0]["type"] == "hello", data[:200]
            assert len(lines) == 2 and lines[1]["type"] == "error" and lines[1]["message"], (payload[:60], data[:500])
            counts["garbage"] = counts.get("garbage", 0) + 1


def half_open(path, stop: threading.Event, counts: dict) -> list[socket.socket]:
    """Connections left hanging: mid-line and silent, some with their sending side shut."""
    held = []
    for i in range(50):
        s = _raw(path)
        s.sendall(b'{"type": "ping", "seq": 1')  # no newline, ever
        if i % 2:
            s.shutdown(socket.SHUT_WR)
        held.append(s)
    counts["half_open"] = len(held)
    return held


def never_reader(path, stop: threading.Event, counts: dict) -> None:
    """Subscribes, then floods pings and never reads a byte, until the daemon drops it."""
    with _raw(path) as s:
        s.sendall(b'{"type": "subscribe", "seq": 1}\n')
        s.settimeout(0.2)
        ping = b'{"type": "ping", "seq": 2}\n' * 256
        while not stop.is_set():
            try:
                s.send(ping)
            except TimeoutError:
                continue  # the daemon stopped reading us for a moment: its queue for us is full
            except (BrokenPipeError, ConnectionResetError):
                counts["never_reader_dropped"] = True
                return


# --------------------------------------------------------------------------- the test


def test_abusive_clients_while_builds_run(captured, daemon, host, source):
    pid = daemon.proc.pid
    stop = threading.Event()
    counts: dict = {}
    rss: list[int] = []
    errors: list[BaseException] = []

    def guarded(fn, *args):
        try:
            fn(*args)
        except BaseException as exc:
            errors.append(exc)

    def sample():
        while not stop.is_set():
            rss.append(daemon_rss_kib(pid))
            time.sleep(0.05)

    async def main():
        async with connect(daemon.socket_path) as a, connect(daemon.socket_path) as b:
            await a.subscribe(workspace=str(captured.workspace))
            await b.subscribe(workspace=str(captured.workspace))
            start = mark = await quiet_mark(a, captured.workspace)
            baseline = daemon_rss_kib(pid)
            held = await anyio.to_thread.run_sync(half_open, daemon.socket_path, stop, counts)
            threads = [
                threading.Thread(target=guarded, args=args)
                for args in [
                    (sample,),
                    (churn, daemon.socket_path, stop, counts),
                    (garbage, daemon.socket_path, stop, counts),
                    (never_reader, daemon.socket_path, stop, counts),
                ]
            ]
            for t in threads:
                t.start()
            original = source.read_text()
            events_a = []
            try:
                for i in range(EDITS):
                    await anyio.to_thread.run_sync(set_greeting, source, f"ABUSED {i}", original)
                    events = await collect_until(a, lambda e, mark=mark: is_outcome(e) and e["seq"] > mark, 90)
                    events_a += events
                    assert events[-1]["type"] == "patch-ready", events
                    mark = events[-1]["seq"]
                    assert not errors, errors
                with anyio.fail_after(30):  # let the never-reader be caught
                    while "never_reader_dropped" not in counts and not errors:
                        await anyio.sleep(0.1)
            finally:
                stop.set()
                for t in threads:
                    await anyio.to_thread.run_sync(t.join, 30)
            events_b = await collect_until(b, lambda e: e["seq"] >= mark, 30)
            status = await a.request({"type": "status"})
            for s in held:
                s.close()
            return start, baseline, events_a, events_b, status

    start, baseline, events_a, events_b, status = run(main)
    assert not errors, errors

    def live(events):
        return [(e["type"], e["seq"], e.get("id")) for e in events if not e.get("replayed") and e["seq"] > start]

    assert live(events_a) == live(events_b)
    assert sum(1 for e in live(events_a) if e[0] == "patch-ready") == EDITS
    assert counts["churned"] >= 200 and counts["garbage"] >= 6 and counts["half_open"] == 50, counts
    assert counts.get("never_reader_dropped"), counts
    peak = max(rss)
    assert peak - baseline < 64 * 1024, (baseline, peak)  # KiB
    assert status["daemon"]["subscribers"] == 3, status["daemon"]  # the host, a and b
    assert daemon.proc.poll() is None
    host.expect(lambda line: line.startswith("PATCHED"), timeout=30)
    assert_nothing_lost(host, source, "AFTER ABUSE")
    print(f"daemon RSS {baseline} KiB, peak {peak} KiB; {counts}")
