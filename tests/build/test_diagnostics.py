"""rustc JSON diagnostics → data.

The JSON lines below are real stderr output of rustc 1.95 with ``--error-format=json``
(and ``--json=diagnostic-rendered-ansi`` for SYNTAX_ANSI) for small files.
"""

from __future__ import annotations

import json

import pytest

from daemon.build.diagnostics import (
    Diagnostic,
    Span,
    absolutize,
    artifact_notice,
    is_summary_dict,
    is_summary_line,
    parse_diagnostic,
    parse_stream,
    strip_ansi,
)

UNRESOLVED_NAME = [
    '{"$message_type":"diagnostic","message":"cannot find value `nope` in this scope","code":{"code":"E0425","explanation":"An unresolved name was used.\\n\\nErroneous code examples:\\n\\n```compile_fail,E0425\\nsomething_that_doesnt_exist::foo;\\n// error: unresolved name `something_that_doesnt_exist::foo`\\n\\n// or:\\n\\ntrait Foo {\\n    fn bar() {\\n        Self; // error: unresolved name `Self`\\n    }\\n}\\n\\n// or:\\n\\nlet x = unknown_variable;  // error: unresolved name `unknown_variable`\\n```\\n\\nPlease verify that the name wasn\'t misspelled and ensure that the\\nidentifier being referred to is valid for the given situation. Example:\\n\\n```\\nenum something_that_does_exist {\\n    Foo,\\n}\\n```\\n\\nOr:\\n\\n```\\nmod something_that_does_exist {\\n    pub static foo : i32 = 0i32;\\n}\\n\\nsomething_that_does_exist::foo; // ok!\\n```\\n\\nOr:\\n\\n```\\nlet unknown_variable = 12u32;\\nlet x = unknown_variable; // ok!\\n```\\n\\nIf the item is not defined in the current module, it must be imported using a\\n`use` statement, like so:\\n\\n```\\n# mod foo { pub fn bar() {} }\\n# fn main() {\\nuse foo::bar;\\nbar();\\n# }\\n```\\n\\nIf the item you are importing is not defined in some super-module of the\\ncurrent module, then it must also be declared as public (e.g., `pub fn`).\\n"},"level":"error","spans":[{"file_name":"m.rs","byte_start":51,"byte_end":55,"line_start":3,"line_end":3,"column_start":20,"column_end":24,"is_primary":true,"text":[{"text":"    println!(\\"{}\\", nope);","highlight_start":20,"highlight_end":24}],"label":"not found in this scope","suggested_replacement":null,"suggestion_applicability":null,"expansion":null}],"children":[],"rendered":"error[E0425]: cannot find value `nope` in this scope\\n --> m.rs:3:20\\n  |\\n3 |     println!(\\"{}\\", nope);\\n  |                    ^^^^ not found in this scope\\n\\n"}',
    '{"$message_type":"diagnostic","message":"aborting due to 1 previous error","code":null,"level":"error","spans":[],"children":[],"rendered":"error: aborting due to 1 previous error\\n\\n"}',
    '{"$message_type":"diagnostic","message":"For more information about this error, try `rustc --explain E0425`.","code":null,"level":"failure-note","spans":[],"children":[],"rendered":"For more information about this error, try `rustc --explain E0425`.\\n"}',
]

SYNTAX_ANSI = [
    '{"$message_type":"diagnostic","message":"expected expression, found `;`","code":null,"level":"error","spans":[{"file_name":"s.rs","byte_start":24,"byte_end":25,"line_start":2,"line_end":2,"column_start":13,"column_end":14,"is_primary":true,"text":[{"text":"    let x = ;","highlight_start":13,"highlight_end":14}],"label":"expected expression","suggested_replacement":null,"suggestion_applicability":null,"expansion":null}],"children":[],"rendered":"\\u001b[1m\\u001b[91merror\\u001b[0m\\u001b[1m: expected expression, found `;`\\u001b[0m\\n \\u001b[1m\\u001b[94m--> \\u001b[0ms.rs:2:13\\n  \\u001b[1m\\u001b[94m|\\u001b[0m\\n\\u001b[1m\\u001b[94m2\\u001b[0m \\u001b[1m\\u001b[94m|\\u001b[0m     let x = ;\\n  \\u001b[1m\\u001b[94m|\\u001b[0m             \\u001b[1m\\u001b[91m^\\u001b[0m \\u001b[1m\\u001b[91mexpected expression\\u001b[0m\\n\\n"}',
    '{"$message_type":"diagnostic","message":"aborting due to 1 previous error","code":null,"level":"error","spans":[],"children":[],"rendered":"\\u001b[1m\\u001b[91merror\\u001b[0m\\u001b[1m: aborting due to 1 previous error\\u001b[0m\\n\\n"}',
]

UNUSED_WARNING = [
    '{"$message_type":"diagnostic","message":"unused variable: `unused`","code":{"code":"unused_variables","explanation":null},"level":"warning","spans":[{"file_name":"w.rs","byte_start":20,"byte_end":26,"line_start":2,"line_end":2,"column_start":9,"column_end":15,"is_primary":true,"text":[{"text":"    let unused = 1;","highlight_start":9,"highlight_end":15}],"label":null,"suggested_replacement":null,"suggestion_applicability":null,"expansion":null}],"children":[{"message":"`#[warn(unused_variables)]` (part of `#[warn(unused)]`) on by default","code":null,"level":"note","spans":[],"children":[],"rendered":null},{"message":"if this is intentional, prefix it with an underscore","code":null,"level":"help","spans":[{"file_name":"w.rs","byte_start":20,"byte_end":26,"line_start":2,"line_end":2,"column_start":9,"column_end":15,"is_primary":true,"text":[{"text":"    let unused = 1;","highlight_start":9,"highlight_end":15}],"label":null,"suggested_replacement":"_unused","suggestion_applicability":"MachineApplicable","expansion":null}],"children":[],"rendered":null}],"rendered":"warning: unused variable: `unused`\\n --> w.rs:2:9\\n  |\\n2 |     let unused = 1;\\n  |         ^^^^^^ help: if this is intentional, prefix it with an underscore: `_unused`\\n  |\\n  = note: `#[warn(unused_variables)]` (part of `#[warn(unused)]`) on by default\\n\\n"}',
    '{"$message_type":"diagnostic","message":"1 warning emitted","code":null,"level":"warning","spans":[],"children":[],"rendered":"warning: 1 warning emitted\\n\\n"}',
]

MACRO_ERRORS = [
    '{"$message_type":"diagnostic","message":"mismatched types","code":{"code":"E0308","explanation":"Expected type did not match the received type.\\n\\nErroneous code examples:\\n\\n```compile_fail,E0308\\nfn plus_one(x: i32) -> i32 {\\n    x + 1\\n}\\n\\nplus_one(\\"Not a number\\");\\n//       ^^^^^^^^^^^^^^ expected `i32`, found `&str`\\n\\nif \\"Not a bool\\" {\\n// ^^^^^^^^^^^^ expected `bool`, found `&str`\\n}\\n\\nlet x: f32 = \\"Not a float\\";\\n//     ---   ^^^^^^^^^^^^^ expected `f32`, found `&str`\\n//     |\\n//     expected due to this\\n```\\n\\nThis error occurs when an expression was used in a place where the compiler\\nexpected an expression of a different type. It can occur in several cases, the\\nmost common being when calling a function and passing an argument which has a\\ndifferent type than the matching type in the function declaration.\\n"},"level":"error","spans":[{"file_name":"x.rs","byte_start":39,"byte_end":42,"line_start":1,"line_end":1,"column_start":40,"column_end":43,"is_primary":true,"text":[{"text":"macro_rules! bad { () => { let y: u8 = \\"s\\"; } }","highlight_start":40,"highlight_end":43}],"label":"expected `u8`, found `&str`","suggested_replacement":null,"suggestion_applicability":null,"expansion":{"span":{"file_name":"x.rs","byte_start":64,"byte_end":70,"line_start":3,"line_end":3,"column_start":5,"column_end":11,"is_primary":false,"text":[{"text":"    bad!();","highlight_start":5,"highlight_end":11}],"label":null,"suggested_replacement":null,"suggestion_applicability":null,"expansion":null},"macro_decl_name":"bad!","def_site_span":{"file_name":"x.rs","byte_start":0,"byte_end":16,"line_start":1,"line_end":1,"column_start":1,"column_end":17,"is_primary":false,"text":[{"text":"macro_rules! bad { () => { let y: u8 = \\"s\\"; } }","highlight_start":1,"highlight_end":17}],"label":null,"suggested_replacement":null,"suggestion_applicability":null,"expansion":null}}},{"file_name":"x.rs","byte_start":34,"byte_end":36,"line_start":1,"line_end":1,"column_start":35,"column_end":37,"is_primary":false,"text":[{"text":"macro_rules! bad { () => { let y: u8 = \\"s\\"; } }","highlight_start":35,"highlight_end":37}],"label":"expected due to this","suggested_replacement":null,"suggestion_applicability":null,"expansion":{"span":{"file_name":"x.rs","byte_start":64,"byte_end":70,"line_start":3,"line_end":3,"column_start":5,"column_end":11,"is_primary":false,"text":[{"text":"    bad!();","highlight_start":5,"highlight_end":11}],"label":null,"suggested_replacement":null,"suggestion_applicability":null,"expansion":null},"macro_decl_name":"bad!","def_site_span":{"file_name":"x.rs","byte_start":0,"byte_end":16,"line_start":1,"line_end":1,"column_start":1,"column_end":17,"is_primary":false,"text":[{"text":"macro_rules! bad { () => { let y: u8 = \\"s\\"; } }","highlight_start":1,"highlight_end":17}],"label":null,"suggested_replacement":null,"suggestion_applicability":null,"expansion":null}}}],"children":[],"rendered":"error[E0308]: mismatched types\\n --> x.rs:1:40\\n  |\\n1 | macro_rules! bad { () => { let y: u8 = \\"s\\"; } }\\n  |                                   --   ^^^ expected `u8`, found `&str`\\n  |                                   |\\n  |                                   expected due to this\\n2 | fn main() {\\n3 |     bad!();\\n  |     ------ in this macro invocation\\n  |\\n  = note: this error originates in the macro `bad` (in Nightly builds, run with -Z macro-backtrace for more info)\\n\\n"}',
    '{"$message_type":"diagnostic","message":"mismatched types","code":{"code":"E0308","explanation":"Expected type did not match the received type.\\n\\nErroneous code examples:\\n\\n```compile_fail,E0308\\nfn plus_one(x: i32) -> i32 {\\n    x + 1\\n}\\n\\nplus_one(\\"Not a number\\");\\n//       ^^^^^^^^^^^^^^ expected `i32`, found `&str`\\n\\nif \\"Not a bool\\" {\\n// ^^^^^^^^^^^^ expected `bool`, found `&str`\\n}\\n\\nlet x: f32 = \\"Not a float\\";\\n//     ---   ^^^^^^^^^^^^^ expected `f32`, found `&str`\\n//     |\\n//     expected due to this\\n```\\n\\nThis error occurs when an expression was used in a place where the compiler\\nexpected an expression of a different type. It can occur in several cases, the\\nmost common being when calling a function and passing an argument which has a\\ndifferent type than the matching type in the function declaration.\\n"},"level":"error","spans":[{"file_name":"x.rs","byte_start":92,"byte_end":96,"line_start":4,"line_end":4,"column_start":21,"column_end":25,"is_primary":true,"text":[{"text":"    assert_eq!(1u8, 2u16);","highlight_start":21,"highlight_end":25}],"label":"expected `u8`, found `u16`","suggested_replacement":null,"suggestion_applicability":null,"expansion":null}],"children":[{"message":"change the type of the numeric literal from `u16` to `u8`","code":null,"level":"help","spans":[{"file_name":"x.rs","byte_start":93,"byte_end":96,"line_start":4,"line_end":4,"column_start":22,"column_end":25,"is_primary":true,"text":[{"text":"    assert_eq!(1u8, 2u16);","highlight_start":22,"highlight_end":25}],"label":null,"suggested_replacement":"u8","suggestion_applicability":"MachineApplicable","expansion":null}],"children":[],"rendered":null}],"rendered":"error[E0308]: mismatched types\\n --> x.rs:4:21\\n  |\\n4 |     assert_eq!(1u8, 2u16);\\n  |                     ^^^^ expected `u8`, found `u16`\\n  |\\nhelp: change the type of the numeric literal from `u16` to `u8`\\n  |\\n4 -     assert_eq!(1u8, 2u16);\\n4 +     assert_eq!(1u8, 2u8);\\n  |\\n\\n"}',
    '{"$message_type":"diagnostic","message":"aborting due to 2 previous errors","code":null,"level":"error","spans":[],"children":[],"rendered":"error: aborting due to 2 previous errors\\n\\n"}',
    '{"$message_type":"diagnostic","message":"For more information about this error, try `rustc --explain E0308`.","code":null,"level":"failure-note","spans":[],"children":[],"rendered":"For more information about this error, try `rustc --explain E0308`.\\n"}',
]


def test_unresolved_name_error():
    stream = parse_stream("\n".join(UNRESOLVED_NAME))
    assert stream.other_lines == ()
    first = stream.diagnostics[0]
    assert first.level == "error"
    assert first.code == "E0425"
    assert first.message == "cannot find value `nope` in this scope"
    assert first.span == Span("m.rs", 3, 20, 3, 24, "not found in this scope")
    assert "m.rs:3:20" in first.rendered
    assert first.summary() == "m.rs:3:20: error[E0425]: cannot find value `nope` in this scope"
    assert [d.level for d in stream.diagnostics] == ["error", "error", "failure-note"]
    assert len(stream.errors) == 2 and stream.warnings == ()


def test_syntax_error_with_ansi_rendering():
    diag, aborting = parse_stream(SYNTAX_ANSI).diagnostics
    assert aborting.is_summary and not diag.is_summary
    assert diag.code is None
    assert diag.span is not None and (diag.span.file, diag.span.line, diag.span.column) == ("s.rs", 2, 13)
    assert "\x1b[" in diag.rendered
    assert strip_ansi(diag.rendered).startswith("error: expected expression, found `;`")


def test_warning_is_not_an_error():
    stream = parse_stream(UNUSED_WARNING)
    assert [d.message for d in stream.diagnostics] == ["unused variable: `unused`", "1 warning emitted"]
    assert stream.errors == ()
    (warning,) = stream.warnings  # the "1 warning emitted" count is not a warning of its own
    assert stream.diagnostics[1].is_summary and not warning.is_summary
    assert warning.span.line == 2 and warning.children  # "if this is intentional, prefix it with an underscore"
    assert any(c.level == "help" for c in warning.children)


def test_user_macro_error_points_at_the_macro_definition():
    stream = parse_stream(MACRO_ERRORS)
    first, second = stream.errors[:2]
    assert (first.span.file, first.span.line) == ("x.rs", 1)
    assert (second.span.file, second.span.line) == ("x.rs", 4)


def test_std_macro_span_walks_out_to_the_invocation():
    raw = {
        "message": "boom",
        "level": "error",
        "spans": [
            {
                "file_name": "/rustc/59807616e/library/core/src/macros/mod.rs",
                "line_start": 40,
                "line_end": 40,
                "column_start": 1,
                "column_end": 2,
                "is_primary": True,
                "expansion": {
                    "span": {
                        "file_name": "<format_args>",
                        "line_start": 1,
                        "line_end": 1,
                        "column_start": 1,
                        "column_end": 2,
                        "expansion": {
                            "span": {
                                "file_name": "src/main.rs",
                                "line_start": 7,
                                "line_end": 7,
                                "column_start": 5,
                                "column_end": 9,
                            }
                        },
                    },
                },
            }
        ],
    }
    assert parse_diagnostic(raw).span.location() == "src/main.rs:7:5"


def test_mixed_stream_keeps_plain_lines_and_skips_notifications():
    text = "\n".join(
        [
            "thread 'rustc' panicked at compiler/rustc_middle/src/ty/mod.rs:1:1:",
            UNUSED_WARNING[0],
            json.dumps({"$message_type": "artifact", "artifact": "/s/x.o", "emit": "obj"}),
            "{not json at all",
            "",
            "note: the compiler unexpectedly panicked. this is a bug.",
        ]
    )
    stream = parse_stream(text)
    assert len(stream.diagnostics) == 1
    assert stream.other_lines == (
        "thread 'rustc' panicked at compiler/rustc_middle/src/ty/mod.rs:1:1:",
        "{not json at all",
        "note: the compiler unexpectedly panicked. this is a bug.",
    )


def test_absolutize_resolves_relative_files_only():
    diag = Diagnostic(
        level="error",
        message="m",
        span=Span("src/../src/main.rs", 1, 1, 1, 2),
        children=(
            Diagnostic(level="note", message="n", span=Span("/abs/lib.rs", 2, 1, 2, 1)),
            Diagnostic(level="note", message="n", span=Span("<anon>", 2, 1, 2, 1)),
        ),
    )
    fixed = absolutize(diag, "/ws/app")
    assert fixed.span.file == "/ws/app/src/main.rs"
    assert fixed.children[0].span.file == "/abs/lib.rs"
    assert fixed.children[1].span.file == "<anon>"


def test_to_dict_is_json_serialisable():
    diag = parse_stream(UNRESOLVED_NAME).diagnostics[0]
    data = json.loads(json.dumps(diag.to_dict()))
    assert data["span"]["line"] == 3 and data["code"] == {"code": "E0425"}
    assert data["spans"][0]["line_start"] == 3 and data["spans"][0]["is_primary"] is True
    import jsonschema

    from daemon.socket.protocol_schema import protocol_schema  # the protocol's diagnostic shape

    schema = protocol_schema()
    jsonschema.validate(data, {"$defs": schema["$defs"], "$ref": "#/$defs/diagnostic"})


def test_artifact_notice_names_what_rustc_wrote():
    line = '{"$message_type":"artifact","artifact":"/s/deps/libcore-1.rmeta","emit":"metadata"}'
    assert artifact_notice(line) == ("metadata", "/s/deps/libcore-1.rmeta")
    assert artifact_notice(line.encode() + b"\n") == ("metadata", "/s/deps/libcore-1.rmeta")
    diagnostic = json.dumps({"$message_type": "diagnostic", "message": "x", "level": "warning"})
    for other in (diagnostic, "warning: plain text", "{not json", '{"$message_type":"artifact"}', "[1]"):
        assert artifact_notice(other) is None


@pytest.mark.parametrize(
    "message, expected",
    [
        ("aborting due to 1 previous error", True),
        ("aborting due to 2 previous errors; 1 warning emitted", True),
        ("1 warning emitted", True),
        ("12 warnings emitted", True),
        ("For more information about this error, try `rustc --explain E0425`.", False),
        ("Some errors have detailed explanations: E0308, E0425.", False),
        ("unused variable: `x`", False),
    ],
)
def test_one_rule_for_rustcs_closing_counts(message, expected):
    assert is_summary_line(message) is expected
    assert is_summary_dict({"level": "error", "message": message, "spans": []}) is expected
    # a diagnostic that points at code is never a count
    assert not is_summary_line(message, has_span=True)
    assert not is_summary_dict({"message": message, "spans": [{"file_name": "src/main.rs"}]})
