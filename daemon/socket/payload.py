"""A patch library's bytes as the binary frames that follow ``patch-ready`` on a WebSocket.

Each frame is ``u32 big-endian header length`` + a UTF-8 JSON header
``{"id": <patch id>, "index": i, "offset": o}`` + at most :data:`CHUNK_BYTES` of the
library, in order, covering it exactly (an empty library still gets one frame). The
``patch-ready`` text frame announces them with :func:`describe`'s ``payload`` object.

Works on an open binary file, read lazily, so a connection holds one chunk at a time; the
caller opens the library once and both describes and streams that same open file, so what it
hashes is what it sends even if the path is replaced meanwhile.
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from typing import BinaryIO

CHUNK_BYTES = 1024 * 1024
_HEADER_LENGTH = struct.Struct(">I")
_HASH_READ_BYTES = 1024 * 1024


@dataclass(frozen=True)
class Payload:
    """What the ``patch-ready`` event's ``payload`` field says about the bytes that follow."""

    size: int
    sha256: str
    chunks: int
    file: str

    def as_field(self) -> dict[str, object]:
        return {"size": self.size, "sha256": self.sha256, "chunks": self.chunks, "file": self.file}


def chunk_count(size: int) -> int:
    """ceil(size / CHUNK_BYTES), at least 1."""
    return max(1, -(-size // CHUNK_BYTES))


def frame(patch_id: int | str, index: int, offset: int, data: bytes) -> bytes:
    """One binary frame: the header's length, the header, the chunk."""
    header = json.dumps({"id": patch_id, "index": index, "offset": offset}, separators=(",", ":")).encode()
    return _HEADER_LENGTH.pack(len(header)) + header + data


def split_frame(data: bytes) -> tuple[dict[str, object], bytes]:
    """The header and chunk of one binary frame (the receiving side; tests use it)."""
    if len(data) < _HEADER_LENGTH.size:
        raise ValueError(f"a payload frame needs at least {_HEADER_LENGTH.size} bytes, got {len(data)}")
    (length,) = _HEADER_LENGTH.unpack_from(data)
    end = _HEADER_LENGTH.size + length
    if end > len(data):
        raise ValueError(f"the frame's header length {length} passes its end ({len(data)} bytes)")
    header = json.loads(data[_HEADER_LENGTH.size : end])
    if not isinstance(header, dict):
        raise ValueError("a payload frame's header must be a JSON object")
    return header, data[end:]


def describe(library: BinaryIO, file_name: str) -> Payload:
    """Size and sha256 of the open ``library`` (read from its start; leaves the position at
    its end). ``file_name`` is the name a device saves it under."""
    library.seek(0)
    digest = hashlib.sha256()
    size = 0
    while block := library.read(_HASH_READ_BYTES):
        digest.update(block)
        size += len(block)
    return Payload(size=size, sha256=digest.hexdigest(), chunks=chunk_count(size), file=os.path.basename(file_name))


def payload_frames(library: BinaryIO, patch_id: int | str, payload: Payload) -> Iterator[bytes]:
    """The binary frames of ``payload``, reading ``library`` one chunk per frame.

    Raises ValueError when the file no longer has the size it was described with (it would
    not match its hash).
    """
    library.seek(0)
    offset = 0
    for index in range(payload.chunks):
        data = library.read(min(CHUNK_BYTES, payload.size - offset))
        if len(data) != min(CHUNK_BYTES, payload.size - offset):
            raise ValueError(f"{payload.file} shrank while it was sent ({offset + len(data)} of {payload.size} bytes)")
        yield frame(patch_id, index, offset, data)
        offset += len(data)
