"""Property-based tests of the protocol parser: any bytes give a request or a ProtocolError,
never another exception, and the line splitter never loses or invents a byte."""

from __future__ import annotations

import json

from hypothesis import given, settings
from hypothesis import strategies as st

from daemon.socket.protocol import MAX_LINE_BYTES, LineBuffer, LineTooLong, ProtocolError, parse_request

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=30,
)


def _parse(line: bytes):
    try:
        return parse_request(line)
    except ProtocolError as exc:
        assert str(exc)  # always a reason to send back
        return None


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=2048))
def test_arbitrary_bytes_are_a_request_or_a_protocol_error(line):
    _parse(line)


@settings(max_examples=300, deadline=None)
@given(
    st.sampled_from(["subscribe", "status", "rebuild", "entry-points", "ping", "shutdown", "nope"]),
    st.dictionaries(
        st.sampled_from(["seq", "workspace", "crate", "pid", "aslr_reference", "build_id", "entries", "x"]),
        json_values,
        max_size=5,
    ),
)
def test_requests_with_arbitrary_field_values(kind, fields):
    request = _parse(json.dumps({"type": kind, **fields}).encode())
    if request is not None:
        assert request.type == kind
        json.dumps(request.fields).encode("utf-8")  # whatever is accepted can be sent back


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=64))
def test_escaped_text_in_a_workspace_never_escapes_the_parser(text):
    escaped = json.dumps("/" + text, ensure_ascii=True)  # \ud800-style escapes included
    _parse(b'{"type":"rebuild","workspace":' + escaped.encode() + b"}")


@settings(max_examples=300, deadline=None)
@given(st.lists(st.binary(max_size=64), max_size=20))
def test_line_buffer_splits_exactly(chunks):
    buffer = LineBuffer(limit=MAX_LINE_BYTES)
    lines = []
    for chunk in chunks:
        try:
            lines += buffer.feed(chunk)
        except LineTooLong:  # pragma: no cover - chunks are far below the limit
            raise
    rest = b"".join(chunks).split(b"\n")
    assert lines == rest[:-1]
    assert buffer.pending_bytes == len(rest[-1])
