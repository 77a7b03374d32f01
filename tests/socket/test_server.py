"""The socket server over real Unix sockets: fan-out, bad input, slow and abusive clients,
single instance, permissions. Every line the daemon sends is checked against the schema."""

from __future__ import annotations

import gc
import json
import os
import pwd
import signal
import socket
import stat
import subprocess
import sys
import time
import tracemalloc
from pathlib import Path

import anyio
import pytest

from daemon.socket.protocol import MAX_LINE_BYTES
from daemon.socket.server import DaemonServer
from daemon.socket.single_instance import DaemonAlreadyRunning, bind_or_fail, probe
from daemon.socket.socket_paths import SocketPathError, default_socket_path, prepare_socket_dir
from tests.support.other_user import connect_as_nobody
from tests.support.protocol_harness import (
    OTHER_WORKSPACE,
    WORKSPACE,
    FakeEngine,
    RawClient,
    build_started,
    every_event_kind,
    patch_ready,
    running_server,
    start_daemon_process,
)

HARNESS = Path(__file__).parents[1] / "support" / "protocol_harness.py"
is_root = os.geteuid() == 0


async def wait_until(predicate, timeout: float = 5.0) -> None:
    with anyio.fail_after(timeout):
        while not predicate():
            await anyio.sleep(0.01)


# --------------------------------------------------------------------------- basics


@pytest.mark.asyncio
async def test_hello_on_connect(sock_path: Path) -> None:
    async with running_server(FakeEngine(), sock_path):
        async with RawClient.connect(sock_path) as client:
            assert client.hello["protocol"] == 2
            assert client.hello["pid"] == os.getpid()
            assert client.hello["version"]


@pytest.mark.asyncio
async def test_subscriber_receives_every_published_event_in_order(sock_path: Path) -> None:
    async with running_server(FakeEngine(), sock_path) as server:
        async with RawClient.connect(sock_path) as client:
            reply = await client.request({"type": "subscribe", "workspace": WORKSPACE})
            assert reply["type"] == "subscribed" and reply["workspace"] == WORKSPACE
            published = [server.publish(event) for event in every_event_kind()]
            received = [await client.read() for _ in published]
            assert received == published
            seqs = [client.hello["seq"], reply["seq"]] + [m["seq"] for m in received]
            assert seqs == sorted(set(seqs)), "seq must strictly increase"


@pytest.mark.asyncio
async def test_requests_before_subscribing_get_no_events(sock_path: Path) -> None:
    async with running_server(FakeEngine(), sock_path) as server:
        async with RawClient.connect(sock_path) as client:
            server.publish(patch_ready(1))
            reply = await client.request({"type": "ping"})
            assert reply["type"] == "pong"  # not the event


@pytest.mark.asyncio
async def test_two_clients_both_get_every_event(sock_path: Path) -> None:
    async with running_server(FakeEngine(), sock_path) as server:
        async with RawClient.connect(sock_path) as first, RawClient.connect(sock_path) as second:
            await first.request({"type": "subscribe"})
            await second.request({"type": "subscribe"})
            published = [server.publish(patch_ready(i)) for i in range(100)]
            assert [await first.read() for _ in published] == published
            assert [await second.read() for _ in published] == published


@pytest.mark.asyncio
async def test_workspace_and_pid_filters(sock_path: Path) -> None:
    async with running_server(FakeEngine(), sock_path) as server:
        async with RawClient.connect(sock_path) as host, RawClient.connect(sock_path) as other_host:
            await host.request({"type": "subscribe", "workspace": WORKSPACE, "pid": 100})
            await other_host.request({"type": "subscribe", "workspace": WORKSPACE, "pid": 200})
            server.publish(patch_ready(1, workspace=OTHER_WORKSPACE))
            server.publish(patch_ready(2, for_pid=200))
            last = server.publish(patch_ready(3))
            assert await host.read() == last
            assert (await other_host.read())["id"] == 2
            assert (await other_host.read())["id"] == 3


@pytest.mark.asyncio
async def test_events_carry_their_time_and_a_replay_keeps_it(sock_path: Path) -> None:
    engine = FakeEngine()
    async with running_server(engine, sock_path) as server:
        async with RawClient.connect(sock_path) as early:
            await early.request({"type": "subscribe"})
            before = time.time()
            event = patch_ready(1)
            server.publish(event)
            after = time.time()
            engine.remember(event)  # the engine keeps the dict it published, not the stamped copy
            live = await early.read()
        assert before - 0.001 <= live["time"] <= after + 0.001
        await anyio.sleep(0.05)
        async with RawClient.connect(sock_path) as late:
            await late.request({"type": "subscribe"})
            replayed = await late.read()
        assert replayed["replayed"] is True and replayed["time"] == live["time"]


@pytest.mark.asyncio
async def test_new_subscriber_first_gets_the_current_state(sock_path: Path) -> None:
    engine = FakeEngine()
    async with running_server(engine, sock_path) as server:
        engine.remember(server.publish(patch_ready(1)))
        engine.remember(server.publish(patch_ready(2, workspace=OTHER_WORKSPACE)))
        async with RawClient.connect(sock_path) as client:
            reply = await client.request({"type": "subscribe", "workspace": WORKSPACE})
            current = await client.read()
            assert current["type"] == "patch-ready" and current["id"] == 1
            assert current["replayed"] is True and current["seq"] > reply["seq"]
            live = server.publish(build_started(3))
            assert await client.read() == live


@pytest.mark.asyncio
async def test_status_reply(sock_path: Path) -> None:
    async with running_server(FakeEngine(), sock_path):
        async with RawClient.connect(sock_path) as client:
            reply = await client.request({"type": "status"})
            assert reply["type"] == "status"
            assert reply["daemon"]["pid"] == os.getpid()
            assert reply["daemon"]["socket"] == str(sock_path)
            assert reply["daemon"]["clients"] == 1
            assert [w["workspace"] for w in reply["workspaces"]] == [WORKSPACE, OTHER_WORKSPACE]


@pytest.mark.asyncio
async def test_rebuild_reaches_the_engine_and_bad_requests_do_not(sock_path: Path) -> None:
    engine = FakeEngine()
    async with running_server(engine, sock_path):
        async with RawClient.connect(sock_path) as client:
            assert (await client.request({"type": "rebuild", "workspace": WORKSPACE, "crate": "demo"}))["type"] == "ok"
            unknown = await client.request({"type": "rebuild", "workspace": "/not/served"})
            assert unknown["type"] == "error" and "not served" in unknown["message"]
            traversal = await client.request({"type": "rebuild", "workspace": WORKSPACE, "crate": "../../etc"})
            assert traversal["type"] == "error" and "not a crate name" in traversal["message"]
            assert engine.rebuilds == [(WORKSPACE, "demo")]


@pytest.mark.asyncio
async def test_publish_refuses_non_events_and_schema_violations(sock_path: Path) -> None:
    async with running_server(FakeEngine(), sock_path) as server:
        with pytest.raises(ValueError, match="not an event type"):
            server.publish({"type": "hello"})
        with pytest.raises(ValueError, match="invalid 'patch-ready'"):
            server.publish({"type": "patch-ready", "id": 1})


# --------------------------------------------------------------------------- bad input


@pytest.mark.asyncio
async def test_bad_lines_get_plain_errors_and_nobody_else_notices(sock_path: Path) -> None:
    async with running_server(FakeEngine(), sock_path) as server:
        async with RawClient.connect(sock_path) as bystander, RawClient.connect(sock_path) as abuser:
            await bystander.request({"type": "subscribe"})
            cases = [
                (b"{this is not json\n", "not valid JSON"),
                (b'{"type": "launch-missiles", "seq": 5}\n', "unknown request type 'launch-missiles'"),
                (b'{"seq": 6}\n', "no 'type' field"),
                (b'{"type": "rebuild", "seq": 7}\n', "needs a 'workspace'"),
                (os.urandom(64).replace(b"\n", b"") + b"\n\x00\xff\xfe\n", None),
            ]
            for i, (line, reason) in enumerate(cases):
                await abuser.send_raw(line)
                error = await abuser.read()
                assert error["type"] == "error", error
                if reason:
                    assert reason in error["message"]
                if b"seq" in line:
                    assert error["re"] == json.loads(line)["seq"]
                event = server.publish(patch_ready(i))
                assert await bystander.read() == event
            while abuser.ready or abuser.lines.pending_bytes:  # remaining garbage errors
                await abuser.read()
            assert (await abuser.request({"type": "ping"}))["type"] == "pong"


@pytest.mark.asyncio
async def test_oversized_line_gets_a_reason_and_a_close(sock_path: Path) -> None:
    async with running_server(FakeEngine(), sock_path) as server:
        async with RawClient.connect(sock_path) as bystander, RawClient.connect(sock_path) as abuser:
            await bystander.request({"type": "subscribe"})
            chunk = b"x" * (1024 * 1024)
            with anyio.move_on_after(5):  # the daemon may close before we finish sending
                try:
                    for _ in range(10):
                        await abuser.send_raw(chunk)
                except (anyio.BrokenResourceError, OSError):
                    pass
            messages = await abuser.read_until_closed()
            assert [m["type"] for m in messages] == ["error"]
            assert f"longer than {MAX_LINE_BYTES} bytes" in messages[0]["message"]
            event = server.publish(patch_ready(1))
            assert await bystander.read() == event
            assert server.client_count == 1


@pytest.mark.asyncio
async def test_client_that_hangs_up_its_side_gets_its_answers_then_a_close(sock_path: Path) -> None:
    async with running_server(FakeEngine(), sock_path) as server:
        async with RawClient.connect(sock_path) as polite:
            await polite.send_raw(b'{"type": "ping", "seq": 1}\n')
            polite.stream.extra(anyio.abc.SocketAttribute.raw_socket).shutdown(socket.SHUT_WR)
            assert [m["type"] for m in await polite.read_until_closed()] == ["pong"]
        async with RawClient.connect(sock_path) as truncated:
            await truncated.send_raw(b'{"type": "ping"')
            truncated.stream.extra(anyio.abc.SocketAttribute.raw_socket).shutdown(socket.SHUT_WR)
            messages = await truncated.read_until_closed()
            assert [m["type"] for m in messages] == ["error"]
            assert "not valid JSON" in messages[0]["message"]
        await wait_until(lambda: server.client_count == 0)


@pytest.mark.asyncio
async def test_stalled_half_lines_do_not_hold_anything_up(sock_path: Path) -> None:
    async with running_server(FakeEngine(), sock_path) as server:
        async with RawClient.connect(sock_path) as subscriber:
            await subscriber.request({"type": "subscribe"})
            stalled = []
            for _ in range(20):
                raw = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                raw.connect(os.fspath(sock_path))
                raw.sendall(b'{"type": "subscr')  # and then nothing, forever
                stalled.append(raw)
            silent = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            silent.connect(os.fspath(sock_path))  # never sends a byte
            stalled.append(silent)
            await wait_until(lambda: server.client_count == 22)
            published = [server.publish(patch_ready(i)) for i in range(50)]
            assert [await subscriber.read() for _ in published] == published
            for raw in stalled:
                raw.close()
            await wait_until(lambda: server.client_count == 1)


# --------------------------------------------------------------------------- slow and churning clients


@pytest.mark.asyncio
async def test_slow_client_is_dropped_others_lose_nothing_memory_stays_bounded(sock_path: Path) -> None:
    queue_limit = 16
    payload = "p" * (64 * 1024)
    async with running_server(FakeEngine(), sock_path, queue_limit=queue_limit) as server:
        async with RawClient.connect(sock_path) as fast:
            await fast.request({"type": "subscribe"})
            slow = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            slow.connect(os.fspath(sock_path))
            slow.sendall(b'{"type": "subscribe", "seq": 1}\n')
            await wait_until(lambda: server.subscriber_count == 2)

            gc.collect()
            tracemalloc.start()
            baseline = tracemalloc.get_traced_memory()[0]
            max_queued = 0
            published = []
            for i in range(300):  # 300 × 64 KiB ≈ 19 MiB published
                published.append(server.publish(patch_ready(i, padding=payload)))
                max_queued = max(max_queued, server.queued_messages())
                received = await fast.read()
                assert received["seq"] == published[-1]["seq"] and received == published[-1]
                fast.received.clear()  # measure the daemon, not this test's client
                del received
            peak = tracemalloc.get_traced_memory()[1] - baseline
            tracemalloc.stop()

            assert server.subscriber_count == 1, "the slow client should have been dropped"
            assert max_queued <= 2 * queue_limit
            # Everything the daemon held for the slow client: its queue of 64 KiB messages,
            # plus what the fast client was sent. Far below the 19 MiB published.
            assert peak < 8 * 1024 * 1024, f"daemon memory grew by {peak} bytes"

            # The slow client got a prefix of the stream, then the connection closed.
            slow.setblocking(False)
            data = b""
            with anyio.fail_after(5):
                while True:
                    await anyio.wait_readable(slow)
                    chunk = slow.recv(1 << 20)
                    if not chunk:
                        break
                    data += chunk
            slow.close()
            lines = [json.loads(line) for line in data.split(b"\n")[:-1]]
            assert [m["type"] for m in lines[:2]] == ["hello", "subscribed"]
            events = [m for m in lines[2:] if m["type"] == "patch-ready"]
            assert events == published[: len(events)]
            assert len(events) < len(published)


@pytest.mark.asyncio
async def test_a_client_flooding_requests_without_reading_is_dropped(sock_path: Path) -> None:
    async with running_server(FakeEngine(), sock_path, queue_limit=8) as server:
        async with RawClient.connect(sock_path) as bystander:
            await bystander.request({"type": "subscribe"})
            flood = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            flood.connect(os.fspath(sock_path))
            flood.setblocking(False)
            ping = b'{"type":"ping","seq":1}\n' * 1000
            try:
                with anyio.fail_after(10):
                    while True:
                        await anyio.wait_writable(flood)
                        flood.send(ping)
            except (BrokenPipeError, ConnectionResetError):
                pass  # dropped, as it should be
            flood.close()
            event = server.publish(patch_ready(1))
            assert await bystander.read() == event


@pytest.mark.asyncio
async def test_200_clients_connecting_and_disconnecting(sock_path: Path) -> None:
    async with running_server(FakeEngine(), sock_path) as server:
        async with RawClient.connect(sock_path) as subscriber:
            await subscriber.request({"type": "subscribe"})
            published = []
            for i in range(200):
                if i % 3 == 0:  # abrupt: close without reading anything
                    raw = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                    raw.connect(os.fspath(sock_path))
                    raw.close()
                else:
                    async with RawClient.connect(sock_path) as client:
                        if i % 3 == 1:
                            assert (await client.request({"type": "ping"}))["type"] == "pong"
                        else:
                            await client.request({"type": "subscribe"})
                if i % 10 == 0:
                    published.append(server.publish(patch_ready(i)))
            assert [await subscriber.read() for _ in published] == published
            await wait_until(lambda: server.client_count == 1)


@pytest.mark.asyncio
async def test_client_limit(sock_path: Path) -> None:
    async with running_server(FakeEngine(), sock_path, max_clients=2):
        async with RawClient.connect(sock_path) as one, RawClient.connect(sock_path) as two:
            for client in (one, two):  # silent ones would make room (test_server_fairness.py)
                await client.request({"type": "ping"})
            async with RawClient.connect(sock_path, read_hello=False) as third:
                messages = await third.read_until_closed()
                assert [m["type"] for m in messages] == ["error"]
                assert "too many clients" in messages[0]["message"]


# --------------------------------------------------------------------------- lifecycle


@pytest.mark.asyncio
async def test_cancellation_stops_within_a_second_and_removes_the_socket(sock_path: Path) -> None:
    server = DaemonServer(FakeEngine(), sock_path, validate=True)
    stalled = []
    async with anyio.create_task_group() as tg:
        await tg.start(server.run)
        async with RawClient.connect(sock_path) as client:
            await client.request({"type": "subscribe"})
            for _ in range(5):
                raw = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                raw.connect(os.fspath(sock_path))
                raw.sendall(b'{"type":"subscribe","seq":1}\n')  # never reads
                stalled.append(raw)
            for i in range(400):
                server.publish(patch_ready(i, padding="x" * 4096))
            started = time.monotonic()
            tg.cancel_scope.cancel()
    elapsed = time.monotonic() - started
    for raw in stalled:
        raw.close()
    assert elapsed < 1.0, elapsed
    assert not sock_path.exists()


@pytest.mark.asyncio
async def test_shutdown_request_ends_run_and_removes_the_socket(sock_path: Path) -> None:
    server = DaemonServer(FakeEngine(), sock_path, validate=True)
    async with anyio.create_task_group() as tg:
        tg.start_soon(server.run)
        await wait_until(lambda: sock_path.exists())
        async with RawClient.connect(sock_path) as client:
            assert (await client.request({"type": "shutdown"}))["type"] == "ok"
            assert await client.read_until_closed() == []
        with anyio.fail_after(2):
            await wait_until(lambda: not sock_path.exists())
    assert probe(sock_path).state == "absent"


# --------------------------------------------------------------------------- single instance


def test_second_daemon_is_refused_with_a_clear_message(sock_path: Path) -> None:
    first = start_daemon_process(sock_path)
    try:
        with pytest.raises(DaemonAlreadyRunning) as caught:
            bind_or_fail(sock_path)
        assert str(caught.value) == f"thinpatch daemon already running at {sock_path} (pid {first.pid})"
        second = subprocess.run(
            [sys.executable, os.fspath(HARNESS), os.fspath(sock_path)],
            capture_output=True, text=True, timeout=30,
        )
        assert second.returncode == 1
        assert f"thinpatch daemon already running at {sock_path} (pid {first.pid})" in second.stderr
        assert probe(sock_path).state == "running"  # the first one is untouched
    finally:
        first.send_signal(signal.SIGTERM)
        assert first.wait(timeout=10) == 0
    assert not sock_path.exists()


@pytest.mark.asyncio
async def test_stale_socket_after_sigkill_is_replaced(sock_path: Path) -> None:
    crashed = start_daemon_process(sock_path)
    crashed.kill()
    crashed.wait(timeout=10)
    assert sock_path.exists() and probe(sock_path).state == "stale"
    async with running_server(FakeEngine(), sock_path):
        async with RawClient.connect(sock_path) as client:
            assert client.hello["pid"] == os.getpid()


def test_a_file_that_is_not_a_socket_is_never_removed(sock_path: Path) -> None:
    sock_path.parent.mkdir(mode=0o700, parents=True)
    sock_path.write_text("important")
    with pytest.raises(RuntimeError, match="not a socket"):
        bind_or_fail(sock_path)
    assert sock_path.read_text() == "important"


def test_sigusr1_driven_daemon_process_publishes_to_subscribers(sock_path: Path) -> None:
    """The out-of-process daemon (used by the tests above) really serves events."""
    daemon = start_daemon_process(sock_path)
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as raw:
            raw.settimeout(5)
            raw.connect(os.fspath(sock_path))
            raw.sendall(b'{"type":"subscribe","seq":1}\n')
            reader = raw.makefile("rb")
            assert json.loads(reader.readline())["type"] == "hello"
            assert json.loads(reader.readline())["type"] == "subscribed"
            daemon.send_signal(signal.SIGUSR1)
            event = json.loads(reader.readline())
            assert event["type"] == "patch-ready" and event["id"] == 1
    finally:
        daemon.send_signal(signal.SIGTERM)
        assert daemon.wait(timeout=10) == 0


# --------------------------------------------------------------------------- permissions


@pytest.mark.asyncio
async def test_socket_directory_and_lock_permissions(sock_path: Path) -> None:
    async with running_server(FakeEngine(), sock_path):
        assert stat.S_IMODE(os.stat(sock_path.parent).st_mode) == 0o700
        assert stat.S_ISSOCK(os.lstat(sock_path).st_mode)
        assert stat.S_IMODE(os.lstat(sock_path).st_mode) == 0o600
        lock = sock_path.with_name(sock_path.name + ".lock")
        assert stat.S_IMODE(os.stat(lock).st_mode) == 0o600


def test_existing_socket_dir_is_tightened(tmp_path: Path) -> None:
    directory = tmp_path / "thinpatch"
    directory.mkdir(mode=0o755)
    os.chmod(directory, 0o755)
    prepare_socket_dir(directory / "thinpatch.sock")
    assert stat.S_IMODE(os.stat(directory).st_mode) == 0o700


@pytest.mark.skipif(not is_root, reason="needs root to create a directory owned by another user")
def test_socket_dir_owned_by_someone_else_is_refused(tmp_path: Path) -> None:
    directory = tmp_path / "thinpatch-0"
    directory.mkdir(mode=0o700)
    os.chown(directory, pwd.getpwnam("nobody").pw_uid, -1)
    with pytest.raises(SocketPathError, match="belongs to uid"):
        prepare_socket_dir(directory / "thinpatch.sock")


def test_default_socket_path() -> None:
    assert default_socket_path({"XDG_RUNTIME_DIR": "/run/user/1000"}) == Path("/run/user/1000/thinpatch/thinpatch.sock")
    assert default_socket_path({"TMPDIR": "/var/tmp"}, uid=1000) == Path("/var/tmp/thinpatch-1000/thinpatch.sock")
    assert default_socket_path({"THINPATCH_SOCKET": "/x/y.sock", "XDG_RUNTIME_DIR": "/run"}) == Path("/x/y.sock")


@pytest.fixture
def traversable_sock_path():
    """A socket path whose parent directories every user may traverse, so that only the
    daemon's own directory, socket modes and peer check decide who gets in."""
    import shutil
    import tempfile

    base = Path(tempfile.mkdtemp(prefix="tp-perm-", dir="/tmp"))
    os.chmod(base, 0o711)
    yield base / "thinpatch" / "thinpatch.sock"
    shutil.rmtree(base, ignore_errors=True)


@pytest.mark.skipif(not is_root, reason="dropping to another uid needs root")
@pytest.mark.asyncio
async def test_other_uid_cannot_reach_the_socket_with_default_permissions(traversable_sock_path: Path) -> None:
    sock_path = traversable_sock_path
    async with running_server(FakeEngine(), sock_path):
        result = await anyio.to_thread.run_sync(connect_as_nobody, sock_path)
        assert result == b"CONNECT-FAILED errno=13"


@pytest.mark.skipif(not is_root, reason="dropping to another uid needs root")
@pytest.mark.asyncio
async def test_other_uid_is_refused_by_peer_credentials_even_if_the_socket_is_open(
    traversable_sock_path: Path,
) -> None:
    sock_path = traversable_sock_path
    async with running_server(FakeEngine(), sock_path) as server:
        os.chmod(sock_path.parent, 0o755)  # open the door: only SO_PEERCRED stands in the way
        os.chmod(sock_path, 0o666)
        result = await anyio.to_thread.run_sync(connect_as_nobody, sock_path)
        lines = [json.loads(line) for line in result.splitlines()]
        assert [m["type"] for m in lines] == ["error"], result
        assert f"runs as uid {pwd.getpwnam('nobody').pw_uid}" in lines[0]["message"]
        assert server.client_count == 0
        async with RawClient.connect(sock_path) as same_user:
            assert (await same_user.request({"type": "ping"}))["type"] == "pong"


def test_a_chosen_socket_directory_others_can_write_is_refused(tmp_path: Path) -> None:
    """Clients would refuse it (tests/end_to_end/test_attacks_other_user.py): the daemon says so first."""
    os.chmod(tmp_path, 0o700)
    shared = tmp_path / "shared"
    shared.mkdir()
    os.chmod(shared, 0o777)
    with pytest.raises(SocketPathError, match="writable by other users"):
        prepare_socket_dir(shared / "my.sock")
    os.chmod(shared, 0o755)
    assert prepare_socket_dir(shared / "my.sock") == shared
