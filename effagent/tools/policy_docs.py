"""Markdown reference of the policy, generated from its JSON Schema (so the docs cannot drift)."""

from __future__ import annotations

import json
from typing import Any

from effagent.policy import Policy

HEADER = """# Policy reference

Generated from the policy's JSON Schema by `effagent policy docs`; do not edit by hand
(`tests/unit/test_docs.py` fails when this file is stale: regenerate with
`effagent policy docs > docs/policy-reference.md`).

Every section rejects unknown keys. Strings may use `${VAR}` or `${VAR:-default}` from the environment.
"""


def _type(prop: dict[str, Any], defs: dict[str, Any]) -> str:
    if "$ref" in prop:
        return f"[{prop['$ref'].split('/')[-1]}](#{prop['$ref'].split('/')[-1].lower()})"
    if "enum" in prop:
        return " \\| ".join(f"`{v}`" for v in prop["enum"])
    if "const" in prop:
        return f"`{prop['const']}`"
    if "anyOf" in prop:
        return " or ".join(_type(p, defs) for p in prop["anyOf"])
    t = prop.get("type", "any")
    if t == "array":
        return f"list of {_type(prop.get('items', {}), defs)}"
    if t == "object" and "additionalProperties" in prop and isinstance(prop["additionalProperties"], dict):
        return f"map of name → {_type(prop['additionalProperties'], defs)}"
    return str(t)


def _bounds(prop: dict[str, Any]) -> str:
    parts = []
    for key, sym in (("minimum", "≥"), ("exclusiveMinimum", ">"), ("maximum", "≤"), ("exclusiveMaximum", "<")):
        if key in prop:
            parts.append(f"{sym} {prop[key]}")
    for sub in prop.get("anyOf", []):
        b = _bounds(sub)
        if b:
            parts.append(b)
    return ", ".join(parts)


def _section(name: str, schema: dict[str, Any], defs: dict[str, Any]) -> list[str]:
    lines = [f"## {name}", ""]
    if schema.get("description"):
        lines += [" ".join(schema["description"].split()), ""]
    required = set(schema.get("required", []))
    lines += ["| key | type | default | constraints | notes |", "|---|---|---|---|---|"]
    for key, prop in schema.get("properties", {}).items():
        default = "required" if key in required else json.dumps(prop.get("default")) if "default" in prop else ""
        note = " ".join(str(prop.get("description", "")).split())
        lines.append(f"| `{key}` | {_type(prop, defs)} | {default} | {_bounds(prop)} | {note} |")
    return [*lines, ""]


def render() -> str:
    schema = Policy.model_json_schema()
    defs = schema.get("$defs", {})
    out = [HEADER, *_section("Policy (top level)", schema, defs)]
    for name in sorted(defs):
        out += _section(name, defs[name], defs)
    return "\n".join(out).rstrip() + "\n"
