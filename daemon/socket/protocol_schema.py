"""The protocol's JSON Schema (``daemon/data/protocol.schema.json``) and validators for it.

``jsonschema`` is imported lazily: the daemon only needs it when asked to check what it
sends (tests, or ``THINPATCH_VALIDATE_PROTOCOL=1``).
"""

from __future__ import annotations

import json
from functools import cache
from importlib import resources
from typing import Any

SCHEMA_RESOURCE = "data/protocol.schema.json"


@cache
def protocol_schema() -> dict[str, Any]:
    text = resources.files("daemon").joinpath(SCHEMA_RESOURCE).read_text(encoding="utf-8")
    return json.loads(text)


@cache
def _validator(definition: str) -> Any:
    # jsonschema ships no type hints and its stubs are no dependency of ours: the validator is used as Any.
    import jsonschema  # type: ignore[import-untyped]

    schema = protocol_schema()
    root = {
        "$schema": schema["$schema"],
        "$defs": schema["$defs"],
        "$ref": f"#/$defs/{definition}",
    }
    cls = jsonschema.validators.validator_for(root)
    cls.check_schema(root)
    return cls(root, format_checker=cls.FORMAT_CHECKER)


def server_message_errors(message: Any) -> list[str]:
    """Why ``message`` is not a valid daemon → client message (empty when it is)."""
    return _errors("server-message", message)


def client_request_errors(message: Any) -> list[str]:
    """Why ``message`` is not a valid client → daemon request (empty when it is)."""
    return _errors("client-request", message)


def check_server_message(message: dict[str, Any]) -> None:
    problems = server_message_errors(message)
    if problems:
        raise ValueError(f"invalid {message.get('type')!r} message: " + "; ".join(problems))


def _errors(definition: str, message: Any) -> list[str]:
    validator = _validator(definition)
    found = sorted(validator.iter_errors(message), key=lambda e: list(e.absolute_path))
    return [f"{'/'.join(map(str, e.absolute_path)) or '(message)'}: {e.message}" for e in found]
