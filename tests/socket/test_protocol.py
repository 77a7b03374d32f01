"""The protocol as data: encoding, line splitting, request validation, and the JSON Schema."""

from __future__ import annotations

import json

import jsonschema
import pytest

from daemon.socket import protocol
from daemon.socket.protocol import LineBuffer, LineTooLong, ProtocolError, Subscription, parse_request
from daemon.socket.protocol_schema import client_request_errors, protocol_schema, server_message_errors
from tests.support.protocol_harness import WORKSPACE, every_event_kind, patch_ready


def test_schema_is_a_valid_draft_2020_12_schema() -> None:
    jsonschema.Draft202012Validator.check_schema(protocol_schema())


def test_encode_is_one_compact_line_that_decodes_back() -> None:
    message = {"type": "error", "seq": 3, "message": "ünïcode and\nnewline"}
    data = protocol.encode(message)
    assert data.endswith(b"\n") and data.count(b"\n") == 1
    assert protocol.decode(data) == message


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        (b"{not json", "not valid JSON"),
        (b"\xff\xfe\x00garbage", "not valid UTF-8"),
        (b"[1, 2]", "must be a JSON object, got an array"),
        (b'"text"', "got a string"),
        (b"   ", "empty line"),
    ],
)
def test_decode_explains_bad_lines(line: bytes, reason: str) -> None:
    with pytest.raises(ProtocolError, match=reason):
        protocol.decode(line)


def test_line_buffer_splits_across_chunks() -> None:
    lines = LineBuffer(limit=100)
    assert lines.feed(b'{"a":') == []
    assert lines.feed(b'1}\n{"b":2}\n{"c"') == [b'{"a":1}', b'{"b":2}']
    assert lines.pending_bytes == 4
    assert lines.finish() == b'{"c"'


def test_line_buffer_refuses_a_line_over_the_limit_without_keeping_it() -> None:
    lines = LineBuffer(limit=1000)
    lines.feed(b"x" * 600)
    with pytest.raises(LineTooLong, match="longer than 1000 bytes"):
        lines.feed(b"x" * 600)
    assert lines.pending_bytes == 0


def test_line_buffer_accepts_a_line_exactly_at_the_limit() -> None:
    lines = LineBuffer(limit=10)
    assert lines.feed(b"0123456789\n") == [b"0123456789"]


def test_line_buffer_refuses_a_complete_overlong_line_in_one_chunk() -> None:
    with pytest.raises(LineTooLong):
        LineBuffer(limit=10).feed(b"01234567890\n")


# --------------------------------------------------------------------------- requests

VALID_REQUESTS = [
    {"type": "ping", "seq": 1},
    {"type": "ping"},
    {"type": "status", "seq": 2, "future_field": [1, 2]},
    {"type": "subscribe", "seq": 3},
    {"type": "subscribe", "seq": 4, "workspace": WORKSPACE, "pid": 1234, "aslr_reference": 4196000, "build_id": "abc"},
    {"type": "rebuild", "seq": 5, "workspace": WORKSPACE},
    {"type": "rebuild", "seq": 6, "workspace": WORKSPACE, "crate": "my-crate_2"},
    {"type": "shutdown", "seq": 7},
    {"type": "patch-result", "seq": 8, "id": 3, "applied": True},
    {"type": "patch-result", "seq": 9, "id": "b-4", "applied": False, "pid": 77, "message": "dlopen: no such file"},
    {"type": "entry-points", "seq": 10, "entries": []},
    {"type": "entry-points", "seq": 11, "entries": [
        {"offset": -1234, "kind": "closure", "name": "app::main::{{closure}}", "returns": "alloc::string::String"},
        {"offset": 2**63 - 1, "kind": "fn", "name": "fn(&'_ str) -> u32", "returns": "u32", "future": True},
        {"offset": -(2**63), "kind": "pointer-sized-closure", "name": "é" * 2048, "returns": "()"},
    ]},
]

ENTRY = {"offset": 16, "kind": "fn", "name": "fn()", "returns": "()"}

INVALID_REQUESTS = [
    ({"seq": 1}, "no 'type'"),
    ({"type": "explode", "seq": 1}, "unknown request type 'explode'"),
    ({"type": 7}, "'type' must be a string"),
    ({"type": "ping", "seq": -1}, "'seq' must be a non-negative integer"),
    ({"type": "ping", "seq": "1"}, "'seq' must be a non-negative integer"),
    ({"type": "rebuild", "seq": 1}, "needs a 'workspace'"),
    ({"type": "rebuild", "seq": 1, "workspace": "relative/dir"}, "absolute path"),
    ({"type": "rebuild", "seq": 1, "workspace": WORKSPACE, "crate": "../../etc"}, "not a crate name"),
    ({"type": "rebuild", "seq": 1, "workspace": WORKSPACE, "crate": "a/b"}, "not a crate name"),
    ({"type": "rebuild", "seq": 1, "workspace": WORKSPACE, "crate": ""}, "non-empty string"),
    ({"type": "subscribe", "seq": 1, "pid": 0}, "'pid' must be an integer >= 1"),
    ({"type": "subscribe", "seq": 1, "pid": True}, "'pid' must be an integer >= 1"),
    ({"type": "subscribe", "seq": 1, "aslr_reference": "0x10"}, "'aslr_reference' must be an integer"),
    ({"type": "subscribe", "seq": 1, "workspace": 5}, "'workspace' must be a non-empty string"),
    ({"type": "patch-result", "seq": 1, "applied": True}, "needs the 'id'"),
    ({"type": "patch-result", "seq": 1, "id": 3, "applied": "yes"}, "'applied': true or false"),
    ({"type": "patch-result", "seq": 1, "id": 3, "applied": True, "pid": 0}, "'pid' must be an integer >= 1"),
    ({"type": "entry-points", "seq": 1}, "needs 'entries'"),
    ({"type": "entry-points", "seq": 1, "entries": {"0": ENTRY}}, "needs 'entries'"),
    ({"type": "entry-points", "seq": 1, "entries": [ENTRY] * 4097}, "at most 4096 entries"),
    ({"type": "entry-points", "seq": 1, "entries": ["fn"]}, r"entries\[0\] must be an object"),
    ({"type": "entry-points", "seq": 1, "entries": [{**ENTRY, "offset": None}]}, "'offset' must be a 64-bit"),
    ({"type": "entry-points", "seq": 1, "entries": [{**ENTRY, "offset": True}]}, "'offset' must be a 64-bit"),
    ({"type": "entry-points", "seq": 1, "entries": [{**ENTRY, "offset": 1.5}]}, "'offset' must be a 64-bit"),
    ({"type": "entry-points", "seq": 1, "entries": [ENTRY, {**ENTRY, "offset": 2**63}]}, r"entries\[1\]: 'offset'"),
    ({"type": "entry-points", "seq": 1, "entries": [{**ENTRY, "kind": "async"}]}, "'kind' must be one of"),
    ({"type": "entry-points", "seq": 1, "entries": [{**ENTRY, "kind": ["fn"]}]}, "'kind' must be one of"),
    ({"type": "entry-points", "seq": 1, "entries": [{**ENTRY, "name": ""}]}, "'name' must be a non-empty string"),
    ({"type": "entry-points", "seq": 1, "entries": [{**ENTRY, "returns": 5}]}, "'returns' must be a non-empty"),
    ({"type": "entry-points", "seq": 1, "entries": [{**ENTRY, "name": "n" * 4097}]}, "longer than 4096 bytes"),
]


@pytest.mark.parametrize("message", VALID_REQUESTS)
def test_valid_requests_pass_both_the_parser_and_the_schema(message: dict) -> None:
    request = parse_request(json.dumps(message).encode())
    assert request.type == message["type"]
    assert request.seq == message.get("seq")
    assert client_request_errors(message) == []


@pytest.mark.parametrize(("message", "reason"), INVALID_REQUESTS)
def test_invalid_requests_fail_both_the_parser_and_the_schema(message: dict, reason: str) -> None:
    with pytest.raises(ProtocolError, match=reason):
        parse_request(json.dumps(message).encode())
    assert client_request_errors(message) != []


def test_a_protocol_error_remembers_which_request_it_answers() -> None:
    with pytest.raises(ProtocolError) as caught:
        parse_request(b'{"type": "rebuild", "seq": 41}')
    assert caught.value.re_seq == 41


def test_entry_points_keep_only_their_known_fields_and_take_the_reporting_pid() -> None:
    request = parse_request(json.dumps(VALID_REQUESTS[11]).encode())
    second = {"offset": 2**63 - 1, "kind": "fn", "name": "fn(&'_ str) -> u32", "returns": "u32"}
    assert request.fields["entries"][1] == second  # without the unknown "future" field
    points = request.entry_points(pid=4242)
    assert points[0] == protocol.EntryPoint(-1234, "closure", "app::main::{{closure}}", "alloc::string::String", 4242)
    assert [p.kind for p in points] == ["closure", "fn", "pointer-sized-closure"]
    assert parse_request(json.dumps(VALID_REQUESTS[10]).encode()).entry_points() == []


def test_an_entry_name_is_limited_in_utf8_bytes_not_characters() -> None:
    too_long = {"type": "entry-points", "entries": [{**ENTRY, "name": "é" * 2049}]}
    with pytest.raises(ProtocolError, match="longer than 4096 bytes"):
        parse_request(json.dumps(too_long).encode())


def test_subscribe_fields_become_a_subscription() -> None:
    request = parse_request(json.dumps(VALID_REQUESTS[4]).encode())
    assert request.subscription() == Subscription(WORKSPACE, 1234, 4196000, "abc")


# --------------------------------------------------------------------------- filtering


def test_workspace_filter() -> None:
    mine = Subscription(workspace=WORKSPACE)
    assert mine.wants(patch_ready(1))
    assert not mine.wants(patch_ready(1, workspace="/elsewhere"))
    assert mine.wants({"type": "error", "message": "about no workspace"})
    assert Subscription().wants(patch_ready(1, workspace="/elsewhere"))


def test_patches_for_one_pid_reach_that_pid_and_observers_only() -> None:
    event = patch_ready(1, for_pid=100)
    assert Subscription(pid=100).wants(event)
    assert not Subscription(pid=200).wants(event)
    assert Subscription().wants(event)  # `thinpatch watch` sees every build
    assert Subscription(pid=200).wants(patch_ready(2))  # no for_pid: for everyone


def test_patches_for_one_binary_reach_its_processes_and_observers_only() -> None:
    event = patch_ready(3, for_build_id="aaaa")
    assert Subscription(pid=100, build_id="aaaa").wants(event)
    assert not Subscription(pid=200, build_id="bbbb").wants(event)
    assert not Subscription(pid=300, build_id="unidentified-300").wants(event)
    assert Subscription().wants(event)
    report = {"type": "patch-result", "id": 3, "workspace": WORKSPACE, "pid": 100, "applied": True}
    assert Subscription().wants(report)  # `thinpatch watch` shows who applied what
    assert not Subscription(pid=100, build_id="aaaa").wants(report)  # a program needs no one's reports


# --------------------------------------------------------------------------- schema


@pytest.mark.parametrize("event", every_event_kind(), ids=lambda e: e["type"])
def test_every_event_kind_matches_the_schema_and_tolerates_extra_fields(event: dict) -> None:
    stamped = {**event, "seq": 9}
    assert server_message_errors(stamped) == []
    assert server_message_errors({**stamped, "added_in_v1_1": {"x": 1}}) == []


COMMON_REQUIRED = {"seq", "id", "workspace", "crate", "files", "lib", "jump_table", "report", "timings",
                   "message", "diagnostics", "reason", "missing_symbols", "action", "verdict", "changes"}
REQUIRED_FIELDS = {
    "not-patchable": {"seq", "reason", "message"},  # sent before the subscriber's workspace is known
    "patch-result": {"seq", "id", "workspace", "pid", "applied"},
}


@pytest.mark.parametrize("event", every_event_kind(), ids=lambda e: e["type"])
def test_every_required_event_field_is_required(event: dict) -> None:
    stamped = {**event, "seq": 9}
    for name in stamped:
        if name == "type":
            continue
        incomplete = {k: v for k, v in stamped.items() if k != name}
        required = name in REQUIRED_FIELDS.get(event["type"], COMMON_REQUIRED)
        assert (server_message_errors(incomplete) != []) == required, name


def test_schema_rejects_wrong_types_inside_events() -> None:
    event = {**patch_ready(1), "seq": 1}
    event["timings"] = {**event["timings"], "total_ms": "fast"}
    assert any("total_ms" in problem for problem in server_message_errors(event))
    event = {**patch_ready(1), "seq": 1}
    event["jump_table"] = {**event["jump_table"], "map": {"0x10": 5}}
    assert server_message_errors(event) != []
    hello = {"type": "hello", "seq": 1, "protocol": protocol.PROTOCOL_VERSION, "version": "x", "pid": 1}
    assert server_message_errors(hello) == []
    assert server_message_errors({**hello, "protocol": 1}) != []
    assert server_message_errors({**hello, "protocol": 3}) != []
    assert server_message_errors({"type": "no-such-event", "seq": 1}) != []


def test_constructors_build_schema_valid_messages() -> None:
    assert server_message_errors({**protocol.hello("0.1.0", 42), "seq": 1}) == []
    assert server_message_errors({**protocol.error("bad", 3), "seq": 2}) == []
    assert server_message_errors({**protocol.reply("pong", None), "seq": 3}) == []
    assert protocol.is_event({"type": "error", "message": "x"})
    assert not protocol.is_event({"type": "error", "message": "x", "re": 1})
    assert not protocol.is_event({"type": "pong"})


PROGRAM = {"name": "demo", "scope": "host-debug", "binary": f"{WORKSPACE}/target/debug/demo", "build_id": "ab12cd"}


def constructed_events() -> list[dict]:
    """Each event constructor, with every optional field given and with none."""
    return [
        protocol.build_started(build_id=1, workspace=WORKSPACE, crate="demo", files=[f"{WORKSPACE}/src/main.rs"],
                               program=PROGRAM),
        protocol.build_started(build_id=1, workspace=WORKSPACE, crate="demo", files=[]),
        protocol.patch_ready(
            build_id=1, workspace=WORKSPACE, crate="demo", edited_crate="demo, core", lib="/tmp/patch-1.so",
            jump_table=patch_ready(1)["jump_table"], report={"mapped": 3}, timings=patch_ready(1)["timings"],
            program=PROGRAM, verdict="unknown", verdict_reason="frame() may be called through a pointer",
            changes=[{"function": "demo::frame", "change": "changed", "verdict": "unknown", "why": "an indirect call",
                      "file": "src/main.rs", "line": 3, "new": True}],
            for_build_id="ab12cd", subscribers=2,
        ),
        protocol.patch_ready(
            build_id=2, workspace=WORKSPACE, crate="demo", edited_crate="demo", lib="/tmp/patch-2.so",
            jump_table=patch_ready(2)["jump_table"], report={}, timings=patch_ready(2)["timings"],
            program={**PROGRAM, "build_id": None},
        ),
        protocol.build_failed(build_id=3, workspace=WORKSPACE, crate="demo", message="crate demo does not compile",
                              diagnostics=[{"message": "expected `;`", "level": "error", "spans": []}],
                              program=PROGRAM),
        protocol.build_failed(build_id=3, workspace=WORKSPACE, crate="?", message="no program can be patched",
                              program=None),
        protocol.patch_rejected(build_id=4, workspace=WORKSPACE, crate="demo", reason="needs 1 symbol",
                                missing_symbols=["demo::helper"], action="Run `thinpatch capture` again.",
                                program=PROGRAM),
        protocol.restart_required(build_id=5, workspace=WORKSPACE, crate="demo", reason="main() is not reached",
                                  changes=[{"function": "demo::main", "change": "changed", "verdict": "needs-restart"}],
                                  timings=patch_ready(5)["timings"], program=PROGRAM, for_build_id="ab12cd"),
        protocol.full_rebuild_required(workspace=WORKSPACE, reason="Cargo.toml changed",
                                       files=[f"{WORKSPACE}/Cargo.toml"]),
        protocol.session_reset(workspace=WORKSPACE, reason="a new `thinpatch capture` rebuilt the program"),
        protocol.not_patchable(reason="replaced", message="process 42 runs another binary", for_pid=42),
        protocol.not_patchable(reason="old-session", message="restart it", workspace=WORKSPACE,
                               for_build_id="ab12cd", program=PROGRAM),
        protocol.patch_result(patch_id=1, workspace=WORKSPACE, pid=42, applied=True, message=None, program=PROGRAM),
        protocol.patch_result(patch_id="1", workspace=WORKSPACE, pid=42, applied=False, message="dlopen failed",
                              program=PROGRAM),
        protocol.error("the session cache is not writable"),
    ]


@pytest.mark.parametrize("event", constructed_events(), ids=lambda e: e["type"])
def test_every_event_constructor_builds_a_schema_valid_event(event: dict) -> None:
    assert protocol.is_event(event)
    assert server_message_errors({**event, "seq": 1, "time": 1700000000.5}) == []
    json.dumps(event)  # plain JSON: no sets, tuples or dataclasses left inside


def test_there_is_a_constructor_for_every_event_type() -> None:
    assert {e["type"] for e in constructed_events()} == set(protocol.EVENT_TYPES)


def test_constructed_events_keep_their_optional_fields_out_when_not_given() -> None:
    started = protocol.build_started(build_id=1, workspace=WORKSPACE, crate="demo", files=["/b", "/a"])
    assert started == {"type": "build-started", "id": 1, "workspace": WORKSPACE, "crate": "demo", "files": ["/a", "/b"]}
    ready = constructed_events()[3]
    assert "for_build_id" not in ready and "subscribers" not in ready
    assert protocol.not_patchable(reason="unidentified", message="m") == {
        "type": "not-patchable", "reason": "unidentified", "message": "m"
    }


def documented_examples() -> list[dict]:
    """Every complete one-line JSON example in docs/protocol.md."""
    import re
    from pathlib import Path

    text = (Path(__file__).resolve().parents[2] / "docs" / "protocol.md").read_text()
    examples = []
    for block in re.findall(r"```json\n(.*?)```", text, re.S):
        for line in block.splitlines():
            try:
                examples.append(json.loads(line))
            except ValueError:
                continue  # multi-line or abbreviated (…) examples
    return examples


def test_documented_examples_match_the_schema() -> None:
    examples = documented_examples()
    assert len(examples) >= 15
    for example in examples:
        is_request = example["type"] in protocol.REQUEST_TYPES and "re" not in example and "daemon" not in example
        if not is_request:
            assert server_message_errors(example) == [], example
            continue
        try:
            parse_request(json.dumps(example).encode())
        except ProtocolError:  # an example of a refused request: the schema refuses it too
            assert client_request_errors(example) != [], example
        else:
            assert client_request_errors(example) == [], example
