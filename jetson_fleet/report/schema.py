"""The report contracts: JSON Schema files in jetson_fleet/schemas, validated with `jsonschema`.

benchmark-v1.json is the per-host report ("jetson-llm-fleet/benchmark/v1"), fleet-v1.json the fleet summary
(fleet.json). validate() names every missing or mistyped field, one "field.path: problem" line each.
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

import jsonschema

SCHEMAS = Path(__file__).resolve().parents[1] / "schemas"
HOST_SCHEMA: dict[str, Any] = json.loads((SCHEMAS / "benchmark-v1.json").read_text())
FLEET_SCHEMA: dict[str, Any] = json.loads((SCHEMAS / "fleet-v1.json").read_text())
SCHEMA_ID: str = HOST_SCHEMA["$id"]
FLEET_SCHEMA_ID: str = FLEET_SCHEMA["$id"]


class ReportError(Exception):
    """Unusable input: a message naming the file or field."""


def parse_time(value: str) -> dt.datetime | None:
    """An ISO 8601 date-time with a time zone, else None."""
    try:
        parsed = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo is not None else None


_FORMATS = jsonschema.FormatChecker(formats=())


@_FORMATS.checks("date-time")
def _is_date_time(value: object) -> bool:
    return not isinstance(value, str) or parse_time(value) is not None


_VALIDATORS = {
    schema["$id"]: jsonschema.Draft202012Validator(schema, format_checker=_FORMATS)
    for schema in (HOST_SCHEMA, FLEET_SCHEMA)
}


def _where(path: list[str | int]) -> str:
    text = ""
    for part in path:
        text += f"[{part}]" if isinstance(part, int) else f"{'.' if text else ''}{part}"
    return text


def _messages(error: jsonschema.ValidationError) -> list[str]:
    path = list(error.absolute_path)
    where = _where(path) or "(report)"
    value, rule = error.instance, error.validator_value
    if error.validator == "required":
        return [f"{_where([*path, key])}: missing" for key in rule if isinstance(value, dict) and key not in value]
    if error.validator == "type":
        names = [rule] if isinstance(rule, str) else list(rule)
        return [f"{where}: expected {' or '.join(names)}, got {type(value).__name__} {value!r:.60}"]
    if error.validator == "const":
        return [f"{where}: expected {rule!r}, got {value!r}"]
    if error.validator == "enum":
        return [f"{where}: {value!r} is not one of {', '.join(map(str, rule))}"]
    if error.validator == "minLength":
        return [f"{where}: must not be empty"]
    if error.validator == "format" and rule == "date-time":
        return [f"{where}: not an ISO 8601 date-time with a time zone: {value!r}"]
    return [f"{where}: {error.message}"]


def validate(data: Any, schema_id: str = SCHEMA_ID) -> list[str]:
    """Every problem of a host report (or, with FLEET_SCHEMA_ID, a fleet summary) as "field.path: problem"; []
    when valid. The order is the schema's."""
    problems: list[str] = []
    for error in _VALIDATORS[schema_id].iter_errors(data):
        problems += [line for line in _messages(error) if line not in problems]
    return problems
