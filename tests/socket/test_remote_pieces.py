"""The pure pieces of the WebSocket endpoint: the token file and the header check, the
binary frames that carry a patch's bytes, and the --listen address with its warning."""

from __future__ import annotations

import hashlib
import io
import os
import stat
from pathlib import Path

import pytest

from daemon.socket.listen_address import ListenAddress, ListenAddressError, exposure_warning, parse_listen_address
from daemon.socket.payload import CHUNK_BYTES, chunk_count, describe, payload_frames, split_frame
from daemon.socket.remote_token import (
    NO_TOKEN,
    WRONG_TOKEN,
    is_token,
    load_or_create_token,
    read_token,
    token_path,
    token_refusal,
)
from daemon.socket.websocket import MAX_CLOSE_REASON_BYTES, close_reason

# --------------------------------------------------------------------------- the token


@pytest.fixture
def runtime_dir(tmp_path: Path) -> Path:
    directory = tmp_path / "thinpatch"
    directory.mkdir(mode=0o700)
    return directory


def test_a_token_is_made_once_private_and_then_kept(runtime_dir: Path) -> None:
    socket_path = runtime_dir / "thinpatch.sock"
    token = load_or_create_token(socket_path)
    assert is_token(token) and len(token) == 64  # 32 random bytes
    info = os.lstat(token_path(socket_path))
    assert stat.S_ISREG(info.st_mode) and stat.S_IMODE(info.st_mode) == 0o600
    assert load_or_create_token(socket_path) == token
    assert sorted(p.name for p in runtime_dir.iterdir()) == ["token"]  # no temporary file left


def test_two_daemons_get_different_tokens(tmp_path: Path) -> None:
    tokens = set()
    for name in ("a", "b"):
        (tmp_path / name).mkdir(mode=0o700)
        tokens.add(load_or_create_token(tmp_path / name / "thinpatch.sock"))
    assert len(tokens) == 2


def test_a_readable_token_file_is_replaced_not_trusted(runtime_dir: Path) -> None:
    path = runtime_dir / "token"
    path.write_text("a" * 64 + "\n")
    os.chmod(path, 0o644)
    assert read_token(path) is None
    token = load_or_create_token(runtime_dir / "thinpatch.sock")
    assert token != "a" * 64
    assert stat.S_IMODE(os.lstat(path).st_mode) == 0o600


def test_a_symlinked_token_is_never_followed(runtime_dir: Path, tmp_path: Path) -> None:
    elsewhere = tmp_path / "planted"
    elsewhere.write_text("b" * 64 + "\n")
    os.chmod(elsewhere, 0o600)
    (runtime_dir / "token").symlink_to(elsewhere)
    token = load_or_create_token(runtime_dir / "thinpatch.sock")
    assert token != "b" * 64
    assert elsewhere.read_text() == "b" * 64 + "\n"  # the link's target is left alone
    assert not (runtime_dir / "token").is_symlink()


def test_a_malformed_token_file_is_replaced(runtime_dir: Path) -> None:
    path = runtime_dir / "token"
    path.write_text("not a token\n")
    os.chmod(path, 0o600)
    assert is_token(load_or_create_token(runtime_dir / "thinpatch.sock"))


def test_the_authorization_header_is_checked() -> None:
    token = "c" * 64
    assert token_refusal(f"Bearer {token}", token) is None
    assert token_refusal(f"bearer {token}", token) is None
    assert token_refusal(None, token) == NO_TOKEN
    assert token_refusal("", token) == NO_TOKEN
    assert token_refusal("Basic abc", token) == NO_TOKEN
    assert token_refusal("Bearer " + "d" * 64, token) == WRONG_TOKEN
    assert token_refusal("Bearer " + token[:-1], token) == WRONG_TOKEN
    assert "thinpatch token" in WRONG_TOKEN and "THINPATCH_TOKEN" in NO_TOKEN
    for reason in (WRONG_TOKEN, NO_TOKEN):
        assert len(reason.encode()) <= MAX_CLOSE_REASON_BYTES


# --------------------------------------------------------------------------- payload frames


@pytest.mark.parametrize("size", [0, 1, CHUNK_BYTES - 1, CHUNK_BYTES, CHUNK_BYTES + 1, 3 * CHUNK_BYTES + 17])
def test_frames_cover_the_library_exactly_in_order(size: int) -> None:
    data = os.urandom(size)
    library = io.BytesIO(data)
    payload = describe(library, "/session/patches/libapp-tag-patch-3.so")
    assert payload.size == size
    assert payload.sha256 == hashlib.sha256(data).hexdigest()
    assert payload.file == "libapp-tag-patch-3.so"
    assert payload.chunks == chunk_count(size) == max(1, -(-size // CHUNK_BYTES))
    frames = list(payload_frames(library, 3, payload))
    assert len(frames) == payload.chunks
    received = b""
    for index, frame in enumerate(frames):
        assert int.from_bytes(frame[:4], "big") == len(frame) - 4 - len(split_frame(frame)[1])
        header, chunk = split_frame(frame)
        assert header == {"id": 3, "index": index, "offset": len(received)}
        assert len(chunk) <= CHUNK_BYTES
        received += chunk
    assert received == data


def test_frames_are_read_lazily_one_chunk_at_a_time() -> None:
    class Counting(io.BytesIO):
        largest = 0

        def read(self, size: int | None = -1) -> bytes:
            block = super().read(size)
            Counting.largest = max(Counting.largest, len(block))
            return block

    library = Counting(os.urandom(4 * CHUNK_BYTES))
    payload = describe(library, "lib.so")
    frames = payload_frames(library, 1, payload)
    next(frames)
    assert library.tell() == CHUNK_BYTES  # one chunk read, not the whole file
    assert Counting.largest <= CHUNK_BYTES


def test_a_library_that_shrank_is_not_sent_as_if_whole() -> None:
    library = io.BytesIO(os.urandom(CHUNK_BYTES + 10))
    payload = describe(library, "lib.so")
    library.truncate(CHUNK_BYTES)
    with pytest.raises(ValueError, match="shrank"):
        list(payload_frames(library, 1, payload))


def test_a_frame_whose_header_passes_its_end_is_refused() -> None:
    with pytest.raises(ValueError):
        split_frame(b"\x00\x00\x01\x00{}")


# --------------------------------------------------------------------------- --listen


@pytest.mark.parametrize(
    ("text", "host", "port"),
    [
        ("127.0.0.1:9876", "127.0.0.1", 9876),
        ("0.0.0.0:9876", "0.0.0.0", 9876),
        ("[::1]:9876", "::1", 9876),
        ("localhost:0", "localhost", 0),
        ("10.231.0.1:65535", "10.231.0.1", 65535),
    ],
)
def test_listen_addresses(text: str, host: str, port: int) -> None:
    address = parse_listen_address(text)
    assert address == ListenAddress(host, port)
    assert parse_listen_address(str(address)) == address


@pytest.mark.parametrize("text", ["9876", "127.0.0.1", "127.0.0.1:", ":9876", "127.0.0.1:70000",
                                  "127.0.0.1:port", "::1:9876", "[::1]9876", "[nope]:1", "ws://127.0.0.1:9876"])
def test_bad_listen_addresses_say_what_is_expected(text: str) -> None:
    with pytest.raises(ListenAddressError, match="ADDR:PORT"):
        parse_listen_address(text)


def test_only_an_address_beyond_this_machine_is_warned_about() -> None:
    for loopback in ("127.0.0.1:9876", "[::1]:9876", "localhost:9876", "127.1.2.3:1"):
        assert exposure_warning(parse_listen_address(loopback)) is None
    for exposed in ("0.0.0.0:9876", "[::]:9876", "10.231.0.1:9876", "devbox.example:9876"):
        warning = exposure_warning(parse_listen_address(exposed))
        assert warning is not None and "run code in the subscribed programs" in warning and "token" in warning


def test_the_url_names_the_endpoint() -> None:
    assert parse_listen_address("127.0.0.1:0").url(40000) == "ws://127.0.0.1:40000/thinpatch"
    assert parse_listen_address("[::1]:9876").url() == "ws://[::1]:9876/thinpatch"


def test_close_reasons_fit_a_close_frame() -> None:
    assert close_reason("short") == "short"
    long = "é" * 200
    cut = close_reason(long)
    assert len(cut.encode()) <= MAX_CLOSE_REASON_BYTES and cut.endswith("...")
