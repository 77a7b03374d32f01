"""Protocol v2 between the daemon and its clients: newline-delimited JSON over a Unix socket.

Pure data: message constructors (one per event type, each taking typed fields and giving
the JSON object), encoding, a bounded line splitter, and validation of client requests. No
I/O. The JSON Schema in ``daemon/data/protocol.schema.json`` describes
the same messages; ``docs/protocol.md`` documents them.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, NoReturn

# 2: programs report their hot entry points (the `entry-points` request).
PROTOCOL_VERSION = 2

# A line longer than this (excluding its newline) is refused and the connection closed.
MAX_LINE_BYTES = 1024 * 1024
# Limits on what one message may hold, so that no line can make the parser recurse,
# compute or allocate without bound. Addresses are u64: at most 20 digits.
MAX_DEPTH = 32
MAX_INT_DIGITS = 20
# Paths longer than PATH_MAX can't name a workspace (and would make path work slow).
MAX_PATH_BYTES = 4096
# A hot entry point's `name` and `returns` (Rust type names) may be at most this long, and a
# program may report at most this many entry points (per request and per connection).
MAX_ENTRY_TEXT_BYTES = 4096
MAX_ENTRY_POINTS = 4096

# Client → daemon.
REQUEST_TYPES = ("subscribe", "status", "rebuild", "patch-result", "entry-points", "ping", "shutdown")

# Daemon → client, in reply to a request (each carries ``re`` when the request had a ``seq``).
REPLY_TYPES = ("subscribed", "status", "pong", "ok", "error")

# Daemon → client, unprompted. ``error`` is both: a reply when it carries ``re``.
EVENT_TYPES = (
    "build-started",
    "patch-ready",
    "build-failed",
    "patch-rejected",
    "restart-required",
    "full-rebuild-required",
    "session-reset",
    "not-patchable",
    "patch-result",
    "error",
)

# One event as the engine publishes it: a JSON object (the server adds ``seq`` and ``time``).
Event = dict[str, Any]
# What identifies a patch in `patch-result`: the build's number (a client may send it as text).
PatchId = int | str
# The captured binary an event is about, as ``Program.describe()`` gives it: name, scope,
# binary, build_id.
ProgramDescription = Mapping[str, object]
# Why a subscribed process gets no patches (the `not-patchable` event's ``reason``).
NotPatchableReason = Literal["not-captured", "replaced", "old-session", "unidentified"]

# How a hot entry point is looked up in the jump table: "fn", a function pointer, by its own
# value; "closure", any callable that is not pointer-sized (closures, and fn items, which are
# zero-sized), by its `HotFunction::call_it`; "pointer-sized-closure", any other pointer-sized
# callable (a closure capturing one word, a reference to a callable), which is taken for a
# function pointer and never redirected (reported by its `call_it`).
EntryKind = Literal["fn", "closure", "pointer-sized-closure"]
ENTRY_KINDS: tuple[EntryKind, ...] = ("fn", "closure", "pointer-sized-closure")
_I64_MIN, _I64_MAX = -(2**63), 2**63 - 1

# Crate names as cargo and rustc accept them. Anything else (paths, `..`) is refused early.
_CRATE_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_-]{0,127}")


def is_crate_name(text: str) -> bool:
    return bool(_CRATE_NAME.fullmatch(text))


class ProtocolError(ValueError):
    """A message the peer sent cannot be accepted. ``str(error)`` is a plain-English reason."""

    def __init__(self, message: str, re_seq: int | None = None) -> None:
        super().__init__(message)
        self.re_seq = re_seq


class LineTooLong(ProtocolError):
    """A line exceeded :data:`MAX_LINE_BYTES`; the connection cannot be resynchronised."""


class RequestError(ValueError):
    """The engine refuses a well-formed request (unknown workspace, bad crate name…).

    ``str(error)`` is sent to the client verbatim, so it must be plain English.
    """


# --------------------------------------------------------------------------- encoding


def encode(message: dict[str, Any]) -> bytes:
    """One message as one compact UTF-8 JSON line."""
    return json.dumps(message, separators=(",", ":"), ensure_ascii=False).encode() + b"\n"


def decode(line: bytes) -> dict[str, Any]:
    """Parse one line (without or with its trailing newline) into a JSON object."""
    try:
        text = line.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ProtocolError(f"message is not valid UTF-8 (bad byte at offset {exc.start})") from None
    text = text.strip()
    if not text:
        raise ProtocolError("empty line: expected a JSON object")
    try:
        value = json.loads(text, parse_int=_bounded_int, parse_constant=_no_constant)
    except json.JSONDecodeError as exc:
        raise ProtocolError(f"message is not valid JSON: {exc.msg} at column {exc.colno}") from None
    except RecursionError:
        raise ProtocolError(f"message is nested too deeply (limit {MAX_DEPTH} levels)") from None
    if not isinstance(value, dict):
        raise ProtocolError(f"message must be a JSON object, got {_json_kind(value)}")
    _check_value(value)
    return value


def _bounded_int(text: str) -> int:
    if len(text.lstrip("-")) > MAX_INT_DIGITS:
        raise ProtocolError(f"message holds an integer of {len(text)} digits (limit {MAX_INT_DIGITS})")
    return int(text)


def _no_constant(name: str) -> NoReturn:
    raise ProtocolError(f"message holds {name}, which is not JSON")


def _check_value(value: object) -> None:
    """Depth and text limits, checked without recursion."""
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if depth > MAX_DEPTH:
            raise ProtocolError(f"message is nested too deeply (limit {MAX_DEPTH} levels)")
        if isinstance(item, dict):
            for key, inner in item.items():
                _check_text(key)
                stack.append((inner, depth + 1))
        elif isinstance(item, list):
            stack.extend((inner, depth + 1) for inner in item)
        elif isinstance(item, str):
            _check_text(item)


def _check_text(text: str) -> None:
    if not text.isascii():
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            raise ProtocolError(
                "message holds a lone surrogate (\\ud800-\\udfff) in a string: not valid text"
            ) from None


class LineBuffer:
    """Splits a byte stream into lines while holding at most ``limit`` + one chunk in memory.

    ``feed`` returns the complete lines found (without newlines). Once a line grows past
    ``limit`` it raises :class:`LineTooLong`; the stream is then unusable.
    """

    def __init__(self, limit: int = MAX_LINE_BYTES) -> None:
        self.limit = limit
        self._pending = bytearray()

    def feed(self, chunk: bytes) -> list[bytes]:
        self._pending += chunk
        lines: list[bytes] = []
        start = 0
        while True:
            end = self._pending.find(b"\n", start)
            if end < 0:
                break
            if end - start > self.limit:
                self._too_long()
            lines.append(bytes(self._pending[start:end]))
            start = end + 1
        del self._pending[:start]
        if len(self._pending) > self.limit:
            self._too_long()
        return lines

    def finish(self) -> bytes | None:
        """At end of stream: the unterminated last line, if any."""
        rest = bytes(self._pending).strip()
        self._pending.clear()
        return rest or None

    @property
    def pending_bytes(self) -> int:
        return len(self._pending)

    def _too_long(self) -> None:
        self._pending.clear()
        raise LineTooLong(f"line longer than {self.limit} bytes without a newline; closing this connection")


# --------------------------------------------------------------------------- requests


@dataclass(frozen=True)
class Subscription:
    """What a subscriber asked for. ``None`` fields match everything."""

    workspace: str | None = None
    pid: int | None = None
    aslr_reference: int | None = None
    build_id: str | None = None

    def wants(self, event: dict[str, Any]) -> bool:
        """Whether this subscriber receives ``event``.

        A workspace filter drops events about other workspaces. A patch built for one
        process (``for_pid``) or one binary (``for_build_id``) reaches the subscribers that
        run it, and the observers that announced no process (``thinpatch watch``), never
        another process.
        """
        workspace = event.get("workspace")
        if self.workspace is not None and workspace is not None and workspace != self.workspace:
            return False
        for_pid = event.get("for_pid")
        if for_pid is not None and self.pid is not None and for_pid != self.pid:
            return False
        if self.is_observer:
            return True
        # A process gets only what was built for its exact binary, and no other process's reports.
        for_build_id = event.get("for_build_id")
        if for_build_id is not None and for_build_id != self.build_id:
            return False
        return event.get("type") != "patch-result"

    @property
    def is_observer(self) -> bool:
        """`thinpatch watch`, an editor: no process of its own, so it sees every event."""
        return self.pid is None and self.build_id is None


@dataclass(frozen=True)
class EntryPoint:
    """A hot entry point of a running program: a callable it passed to `call`/`HotFn`.

    ``offset`` is the entry's address minus the address of the program's ``main`` (add the
    static address of ``main`` in the binary to get the entry's static address); ``kind`` says
    how it is looked up (see :data:`EntryKind`); ``name`` and ``returns`` are Rust's
    ``type_name`` of the callable and of what it returns. ``pid`` is the process that reported
    it (None when it subscribed with a build ID only).
    """

    offset: int
    kind: EntryKind
    name: str
    returns: str
    pid: int | None = None


@dataclass(frozen=True)
class Request:
    type: str
    seq: int | None
    fields: dict[str, Any]

    def subscription(self) -> Subscription:
        return Subscription(
            workspace=self.fields.get("workspace"),
            pid=self.fields.get("pid"),
            aslr_reference=self.fields.get("aslr_reference"),
            build_id=self.fields.get("build_id"),
        )

    def entry_points(self, pid: int | None = None) -> list[EntryPoint]:
        """An `entry-points` request's entries, as reported by process ``pid``."""
        return [EntryPoint(e["offset"], e["kind"], e["name"], e["returns"], pid) for e in self.fields["entries"]]


def parse_request(line: bytes) -> Request:
    """Decode and validate one client line. Raises :class:`ProtocolError` with a reason.

    Unknown extra fields are ignored (forward compatibility); known fields must have the
    right type.
    """
    message = decode(line)
    seq = message.get("seq")
    if seq is not None and not _is_int(seq, minimum=0):
        raise ProtocolError("field 'seq' must be a non-negative integer")
    kind = message.get("type")
    if kind is None:
        raise ProtocolError("message has no 'type' field", seq)
    if not isinstance(kind, str):
        raise ProtocolError("field 'type' must be a string", seq)
    if kind not in REQUEST_TYPES:
        raise ProtocolError(f"unknown request type {kind!r}; expected one of: {', '.join(REQUEST_TYPES)}", seq)
    fields: dict[str, Any] = {}
    if kind == "subscribe":
        fields["workspace"] = _optional_workspace(message, seq)
        fields["pid"] = _optional_int(message, "pid", seq, minimum=1)
        fields["aslr_reference"] = _optional_int(message, "aslr_reference", seq, minimum=0)
        fields["build_id"] = _optional_str(message, "build_id", seq)
    elif kind == "rebuild":
        if "workspace" not in message:
            raise ProtocolError("'rebuild' needs a 'workspace' field (the workspace root path)", seq)
        fields["workspace"] = _optional_workspace(message, seq)
        crate = _optional_str(message, "crate", seq)
        if crate is not None and not _CRATE_NAME.fullmatch(crate):
            raise ProtocolError(
                f"{crate!r} is not a crate name (letters, digits, '_' and '-', starting with a letter or '_')",
                seq,
            )
        fields["crate"] = crate
    elif kind == "patch-result":
        patch_id = message.get("id")
        if not (isinstance(patch_id, str) and patch_id) and not _is_int(patch_id, minimum=0):
            raise ProtocolError("'patch-result' needs the 'id' of the patch-ready event it answers", seq)
        applied = message.get("applied")
        if not isinstance(applied, bool):
            raise ProtocolError("'patch-result' needs 'applied': true or false", seq)
        fields["id"] = patch_id
        fields["applied"] = applied
        fields["pid"] = _optional_int(message, "pid", seq, minimum=1)
        text = message.get("message")
        if text is not None and not isinstance(text, str):
            raise ProtocolError("field 'message' must be a string", seq)
        fields["message"] = text[:4000] if text else None
    elif kind == "entry-points":
        fields["entries"] = _entry_points(message, seq)
    return Request(type=kind, seq=seq, fields={k: v for k, v in fields.items() if v is not None})


def _entry_points(message: dict[str, Any], seq: int | None) -> list[dict[str, Any]]:
    """The entries of an `entry-points` request, checked, with only the fields we know."""
    entries = message.get("entries")
    if not isinstance(entries, list):
        raise ProtocolError("'entry-points' needs 'entries': an array of entry points", seq)
    if len(entries) > MAX_ENTRY_POINTS:
        raise ProtocolError(f"'entry-points' may carry at most {MAX_ENTRY_POINTS} entries", seq)
    checked = []
    for index, entry in enumerate(entries):
        where = f"entries[{index}]"
        if not isinstance(entry, dict):
            raise ProtocolError(f"{where} must be an object with offset, kind, name and returns", seq)
        offset = entry.get("offset")
        if not (isinstance(offset, int) and not isinstance(offset, bool) and _I64_MIN <= offset <= _I64_MAX):
            raise ProtocolError(f"{where}: 'offset' must be a 64-bit signed integer", seq)
        kind = entry.get("kind")
        if kind not in ENTRY_KINDS:
            raise ProtocolError(f"{where}: 'kind' must be one of: {', '.join(ENTRY_KINDS)}", seq)
        texts = {}
        for name in ("name", "returns"):
            text = entry.get(name)
            if not isinstance(text, str) or not text:
                raise ProtocolError(f"{where}: {name!r} must be a non-empty string", seq)
            if len(text.encode("utf-8")) > MAX_ENTRY_TEXT_BYTES:
                raise ProtocolError(f"{where}: {name!r} is longer than {MAX_ENTRY_TEXT_BYTES} bytes", seq)
            texts[name] = text
        checked.append({"offset": offset, "kind": kind, **texts})
    return checked


def _optional_workspace(message: dict[str, Any], seq: int | None) -> str | None:
    value = _optional_str(message, "workspace", seq)
    if value is None:
        return None
    if "\0" in value or not value.startswith("/"):
        raise ProtocolError("field 'workspace' must be an absolute path", seq)
    if len(value.encode("utf-8")) > MAX_PATH_BYTES:
        raise ProtocolError(f"field 'workspace' is longer than {MAX_PATH_BYTES} bytes: not a path", seq)
    return value


def _optional_str(message: dict[str, Any], name: str, seq: int | None) -> str | None:
    value = message.get(name)
    if value is None:
        return None
    if not isinstance(value, str) or not value:
        raise ProtocolError(f"field {name!r} must be a non-empty string", seq)
    return value


def _optional_int(message: dict[str, Any], name: str, seq: int | None, *, minimum: int) -> int | None:
    value = message.get(name)
    if value is None:
        return None
    if not _is_int(value, minimum=minimum):
        raise ProtocolError(f"field {name!r} must be an integer >= {minimum}", seq)
    return value


def _is_int(value: object, *, minimum: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= minimum


def _json_kind(value: object) -> str:
    if isinstance(value, list):
        return "an array"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, bool):
        return "a boolean"
    if value is None:
        return "null"
    return "a number"


# --------------------------------------------------------------------------- server messages
# Constructors return messages without ``seq``; the server stamps it when sending.


def hello(version: str, pid: int, *, remote: bool = False) -> dict[str, Any]:
    """The first message on a connection; ``remote`` on the WebSocket endpoint."""
    message: dict[str, Any] = {"type": "hello", "protocol": PROTOCOL_VERSION, "version": version, "pid": pid}
    if remote:
        message["remote"] = True
    return message


def reply(kind: str, re_seq: int | None, **fields: Any) -> dict[str, Any]:
    message: dict[str, Any] = {"type": kind, **fields}
    if re_seq is not None:
        message["re"] = re_seq
    return message


def error(message: str, re_seq: int | None = None) -> dict[str, Any]:
    return reply("error", re_seq, message=message)


def is_event(message: dict[str, Any]) -> bool:
    """Unprompted messages: events, and errors that answer no request."""
    kind = message.get("type")
    if kind == "error":
        return "re" not in message
    return kind in EVENT_TYPES


# --------------------------------------------------------------------------- events
# One constructor per event type; ``error`` is above. Each gives the event without ``seq`` and
# ``time`` (the server stamps both), its fields always in the same order.


def build_started(
    *, build_id: int, workspace: str, crate: str, files: Iterable[str], program: ProgramDescription | None = None
) -> Event:
    """A build began because ``files`` changed. ``program`` is left out when no program is
    patchable (the build then fails at once, naming why)."""
    event: Event = {
        "type": "build-started",
        "id": build_id,
        "workspace": workspace,
        "crate": crate,
        "files": sorted(files),
    }
    if program is not None:
        event["program"] = dict(program)
    return event


def patch_ready(
    *,
    build_id: int,
    workspace: str,
    crate: str,
    edited_crate: str,
    lib: str,
    jump_table: Mapping[str, Any],
    report: Mapping[str, Any],
    timings: Mapping[str, float],
    program: ProgramDescription,
    verdict: str = "unknown",
    verdict_reason: str | None = None,
    changes: Sequence[Mapping[str, Any]] = (),
    for_build_id: str | None = None,
    subscribers: int = 0,
) -> Event:
    """A verified patch for ``program``. With ``for_build_id`` it reaches only the processes
    running that binary, and says how many were subscribed (``subscribers``) when it was sent.
    ``verdict`` is ``carried`` or ``unknown`` (why: ``verdict_reason``); ``changes`` lists the
    changed functions with their own verdicts."""
    event: Event = {
        "type": "patch-ready",
        "id": build_id,
        "workspace": workspace,
        "crate": crate,
        "edited_crate": edited_crate,
        "lib": lib,
        "jump_table": jump_table,
        "report": report,
        "timings": timings,
        "program": dict(program),
        "verdict": verdict,
        "changes": list(changes),
    }
    if verdict_reason:
        event["verdict_reason"] = verdict_reason
    if for_build_id is not None:
        event["for_build_id"] = for_build_id
        event["subscribers"] = subscribers
    return event


def restart_required(
    *,
    build_id: int,
    workspace: str,
    crate: str,
    reason: str,
    changes: Sequence[Mapping[str, Any]],
    timings: Mapping[str, float],
    program: ProgramDescription,
    for_build_id: str | None = None,
) -> Event:
    """The save built, but a patch can't carry one of its changes (``reason``, and each change's
    verdict in ``changes``): no patch is sent; only a restart runs the saved code."""
    event: Event = {
        "type": "restart-required",
        "id": build_id,
        "workspace": workspace,
        "crate": crate,
        "reason": reason,
        "changes": list(changes),
        "timings": timings,
        "program": dict(program),
    }
    if for_build_id is not None:
        event["for_build_id"] = for_build_id
    return event


def build_failed(
    *,
    build_id: int,
    workspace: str,
    crate: str,
    message: str,
    diagnostics: Sequence[Mapping[str, Any]] = (),
    program: ProgramDescription | None,
) -> Event:
    """The build failed: ``message`` says why, ``diagnostics`` are rustc's (protocol form)."""
    return {
        "type": "build-failed",
        "id": build_id,
        "workspace": workspace,
        "crate": crate,
        "message": message,
        "diagnostics": list(diagnostics),
        "program": dict(program) if program is not None else None,
    }


def patch_rejected(
    *,
    build_id: int,
    workspace: str,
    crate: str,
    reason: str,
    missing_symbols: Sequence[str],
    action: str,
    program: ProgramDescription,
) -> Event:
    """A patch was built but would not load into the program; nothing to apply."""
    return {
        "type": "patch-rejected",
        "id": build_id,
        "workspace": workspace,
        "crate": crate,
        "reason": reason,
        "missing_symbols": list(missing_symbols),
        "action": action,
        "program": dict(program),
    }


def full_rebuild_required(*, workspace: str, reason: str, files: Iterable[str]) -> Event:
    """A change no patch can carry (a manifest, a build script, a damaged capture)."""
    return {"type": "full-rebuild-required", "workspace": workspace, "reason": reason, "files": sorted(files)}


def session_reset(*, workspace: str, reason: str) -> Event:
    """A new capture rebuilt the workspace's programs: earlier patches no longer apply."""
    return {"type": "session-reset", "workspace": workspace, "reason": reason}


def not_patchable(
    *,
    reason: NotPatchableReason,
    message: str,
    workspace: str | None = None,
    for_build_id: str | None = None,
    for_pid: int | None = None,
    program: ProgramDescription | None = None,
) -> Event:
    """A process runs a binary that gets no patches. Sent for one process (``for_pid``, before
    its workspace is known) or for every process running one binary (``for_build_id``)."""
    event: Event = {"type": "not-patchable"}
    if workspace is not None:
        event["workspace"] = workspace
    if for_build_id is not None:
        event["for_build_id"] = for_build_id
    event["reason"] = reason
    event["message"] = message
    if for_pid is not None:
        event["for_pid"] = for_pid
    if program is not None:
        event["program"] = dict(program)
    return event


def patch_result(
    *, patch_id: PatchId, workspace: str, pid: int, applied: bool, message: str | None, program: ProgramDescription
) -> Event:
    """A process reported whether it applied a patch (observers hear it)."""
    return {
        "type": "patch-result",
        "id": patch_id,
        "workspace": workspace,
        "pid": pid,
        "applied": applied,
        "message": message,
        "program": dict(program),
    }
