"""A device that subscribes over the WebSocket and then never reads again.

Run as a script (so it can run inside another network namespace with ``ip netns exec``):

    python silent_device.py ws://HOST:PORT/thinpatch TOKEN BUILD_ID

It speaks the protocol over a plain TCP socket, so nothing reads on its behalf: it completes
the handshake, subscribes with BUILD_ID, prints ``SUBSCRIBED`` once the daemon says so, and
then sleeps with the socket open, its receive buffer filling.
"""

from __future__ import annotations

import base64
import json
import os
import socket
import struct
import sys
import time
from urllib.parse import urlsplit


def read_exact(sock: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            raise SystemExit("the daemon closed the connection")
        data += chunk
    return data


def read_frame(sock: socket.socket) -> tuple[int, bytes]:
    """One server frame (never masked): its opcode and payload."""
    first, second = read_exact(sock, 2)
    length = second & 0x7F
    if length == 126:
        (length,) = struct.unpack("!H", read_exact(sock, 2))
    elif length == 127:
        (length,) = struct.unpack("!Q", read_exact(sock, 8))
    return first & 0x0F, read_exact(sock, length)


def text_frame(text: str) -> bytes:
    """A masked, final text frame, as a client must send."""
    data = text.encode()
    mask = os.urandom(4)
    header = bytes([0x81]) + (
        bytes([0x80 | len(data)]) if len(data) < 126 else bytes([0x80 | 126]) + struct.pack("!H", len(data))
    )
    return header + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(data))


def subscribe_and_stop_reading(url: str, token: str, build_id: str) -> None:
    parts = urlsplit(url)
    assert parts.hostname is not None and parts.port is not None
    sock = socket.create_connection((parts.hostname, parts.port), timeout=30)
    # A small receive buffer: the daemon's sends back up sooner.
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    key = base64.b64encode(os.urandom(16)).decode()
    sock.sendall(
        (
            f"GET {parts.path} HTTP/1.1\r\nHost: {parts.netloc}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\nAuthorization: Bearer {token}\r\n\r\n"
        ).encode()
    )
    head = b""
    while b"\r\n\r\n" not in head:
        head += read_exact(sock, 1)
    if b" 101 " not in head.split(b"\r\n", 1)[0]:
        raise SystemExit(f"the upgrade was refused: {head!r}")
    sock.sendall(text_frame(json.dumps({"type": "subscribe", "seq": 1, "pid": os.getpid(), "build_id": build_id})))
    while True:
        opcode, data = read_frame(sock)
        if opcode == 0x8:
            raise SystemExit(f"closed by the daemon: {data[2:].decode(errors='replace')}")
        if opcode == 0x1 and json.loads(data).get("type") == "subscribed":
            break
    print("SUBSCRIBED", flush=True)
    while True:
        time.sleep(3600)


if __name__ == "__main__":
    subscribe_and_stop_reading(*sys.argv[1:4])
