"""Write the agent's API reference, docs/agent-api.md, from the OpenAPI document it serves.

The reference is rendered from ``backends.agent.openapi.openapi_spec()`` (what ``GET
/v1/openapi.json`` returns), so the API is described once, next to its handlers; the docs test
fails when the page and the document disagree.

    python assets/make_api_reference.py [--out docs/agent-api.md] [--check]
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_OUT = ROOT / "docs" / "agent-api.md"
METHODS = ("get", "put", "post", "patch", "delete", "head", "options")
REF_PREFIX = "#/components/schemas/"


def slug(heading: str) -> str:
    """The anchor GitHub gives a heading: lower case, punctuation dropped, spaces to '-'."""
    text = heading.strip().lower().replace("`", "")
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def cell(text: str) -> str:
    """Text safe inside a Markdown table cell."""
    return text.replace("|", "\\|").replace("\n", " ")


def code(value: Any) -> str:
    """A value as inline code: strings bare, anything else as JSON."""
    text = value if isinstance(value, str) else json.dumps(value)
    return f"`{text}`"


def ref_name(ref: str) -> str:
    if not ref.startswith(REF_PREFIX):
        raise ValueError(f"unsupported $ref {ref!r} (only {REF_PREFIX}...)")
    return ref[len(REF_PREFIX) :]


def ref_link(ref: str) -> str:
    name = ref_name(ref)
    return f"[{name}](#{slug(name)})"


def type_text(schema: dict[str, Any]) -> str:
    """A schema's type in a few words, with links to named schemas."""
    if "$ref" in schema:
        text = ref_link(schema["$ref"])
    elif "allOf" in schema:
        text = " and ".join(type_text(part) for part in schema["allOf"])
    else:
        kind = schema.get("type", "any")
        if kind == "array":
            text = f"array of {type_text(schema.get('items', {}))}"
        elif kind == "object" and isinstance(schema.get("additionalProperties"), dict):
            text = f"object of {type_text(schema['additionalProperties'])}"
        else:
            text = str(kind)
        if "format" in schema:
            text += f" ({schema['format']})"
    if schema.get("nullable"):
        text += " or null"
    return text


def bounds(schema: dict[str, Any]) -> list[str]:
    """Numeric and length limits of one schema, as ``>= 1``, ``<= 100``, ``1..10 items``."""
    notes = []
    if "minimum" in schema:
        notes.append(f"{'>' if schema.get('exclusiveMinimum') else '>='} {schema['minimum']}")
    if "maximum" in schema:
        notes.append(f"{'<' if schema.get('exclusiveMaximum') else '<='} {schema['maximum']}")
    if "minItems" in schema or "maxItems" in schema:
        low, high = schema.get("minItems", 0), schema.get("maxItems", "")
        notes.append(f"{low}..{high} items")
    return notes


def notes_text(schema: dict[str, Any]) -> str:
    """Everything a reader must know about a value beyond its type."""
    notes = []
    if "description" in schema:
        notes.append(str(schema["description"]))
    if "enum" in schema:
        notes.append("one of " + ", ".join(code(v) for v in schema["enum"]))
    notes.extend(bounds(schema))
    items = schema.get("items", {})
    if isinstance(items, dict) and "$ref" not in items:
        item_bounds = bounds(items)
        if item_bounds:
            notes.append("each " + ", ".join(item_bounds))
    if "pattern" in schema:
        notes.append(f"pattern {code(schema['pattern'])}")
    if "default" in schema:
        notes.append(f"default {code(schema['default'])}")
    if "required" in schema and "properties" not in schema and schema["required"]:
        notes.append("always has " + ", ".join(code(k) for k in schema["required"]))
    if schema.get("additionalProperties") is False:
        notes.append("no other fields")
    return "; ".join(notes)


def property_rows(schema: dict[str, Any], prefix: str = "") -> list[str]:
    """One table row per property, nested objects (and arrays of them) as dotted names."""
    rows = []
    required = set(schema.get("required", []))
    for name, prop in schema.get("properties", {}).items():
        field = f"{prefix}{name}"
        rows.append(
            f"| `{field}` | {cell(type_text(prop))} | {'yes' if name in required else 'no'} "
            f"| {cell(notes_text(prop))} |"
        )
        if "properties" in prop:
            rows.extend(property_rows(prop, f"{field}."))
        items = prop.get("items", {})
        if prop.get("type") == "array" and isinstance(items, dict) and "properties" in items:
            rows.extend(property_rows(items, f"{field}[]."))
    return rows


def property_table(schema: dict[str, Any]) -> list[str]:
    rows = property_rows(schema)
    if not rows:
        return []
    return ["| field | type | required | notes |", "| --- | --- | --- | --- |", *rows]


def schema_block(schema: dict[str, Any]) -> list[str]:
    """A named or inline schema: its notes, the schemas it extends, its fields."""
    lines: list[str] = []
    parts = schema.get("allOf", [schema])
    refs = [part["$ref"] for part in parts if "$ref" in part]
    inline = [part for part in parts if "$ref" not in part]
    if refs:
        joined = ", ".join(ref_link(ref) for ref in refs)
        lines += [f"Every field of {joined}, and:" if inline else f"Every field of {joined}.", ""]
    for part in inline:
        table = property_table(part)
        summary = notes_text(part)
        if table:
            lines += [*table, ""]
        if summary:
            lines += [summary[0].upper() + summary[1:] + ".", ""]
        elif not table:
            lines += [f"{type_text(part).capitalize()}.", ""]
    return lines


def auth_text(operation: dict[str, Any], spec: dict[str, Any]) -> str:
    """Which security schemes an operation needs (its own list, else the document's)."""
    requirements = operation.get("security", spec.get("security", []))
    if not requirements:
        return "none"
    schemes = spec.get("components", {}).get("securitySchemes", {})
    names = []
    for requirement in requirements:
        for name in requirement:
            scheme = schemes.get(name, {})
            if scheme.get("type") == "http" and scheme.get("scheme") == "bearer":
                names.append(f"`{name}` (`Authorization: Bearer <token>`)")
            else:
                names.append(f"`{name}`")
    return " or ".join(names)


def content_text(content: dict[str, Any]) -> str:
    return "; ".join(
        f"`{media}`: {type_text(body.get('schema', {}))}" for media, body in content.items()
    )


def status_key(status: str) -> tuple[int, str]:
    return (int(status), status) if status.isdigit() else (1000, status)


def operation_block(
    method: str, path: str, operation: dict[str, Any], shared: list, spec: dict
) -> list[str]:
    lines = [f"### {method.upper()} {path}", ""]
    if "summary" in operation:
        lines += [operation["summary"] + ".", ""]
    if "description" in operation:
        lines += [operation["description"], ""]
    lines += [f"**Auth:** {auth_text(operation, spec)}", ""]
    parameters = [*shared, *operation.get("parameters", [])]
    if parameters:
        lines += [
            "**Parameters:**",
            "",
            "| name | in | required | type | notes |",
            "| --- | --- | --- | --- | --- |",
        ]
        for parameter in parameters:
            schema = parameter.get("schema", {})
            notes = "; ".join(n for n in (parameter.get("description"), notes_text(schema)) if n)
            lines.append(
                f"| `{parameter['name']}` | {parameter['in']} "
                f"| {'yes' if parameter.get('required') else 'no'} "
                f"| {cell(type_text(schema))} | {cell(notes)} |"
            )
        lines.append("")
    body = operation.get("requestBody")
    if body:
        need = "required" if body.get("required") else "optional"
        for media, media_body in body.get("content", {}).items():
            schema = media_body.get("schema", {})
            lines += [f"**Request body** ({need}), `{media}`: {type_text(schema)}", ""]
            lines += schema_block(schema) if "properties" in schema else []
    lines += [
        "**Responses:**",
        "",
        "| status | meaning | body |",
        "| --- | --- | --- |",
    ]
    responses = operation.get("responses", {})
    for status in sorted(responses, key=status_key):
        response = responses[status]
        lines.append(
            f"| {status} | {cell(response.get('description', ''))} "
            f"| {cell(content_text(response.get('content', {})) or 'none')} |"
        )
    lines.append("")
    return lines


def operations(spec: dict[str, Any]) -> list[tuple[str, str, dict, list]]:
    """(method, path, operation, path-level parameters) in the document's order."""
    found = []
    for path, item in spec.get("paths", {}).items():
        for method in (key for key in item if key in METHODS):
            found.append((method, path, item[method], item.get("parameters", [])))
    return found


def render(spec: dict[str, Any]) -> str:
    """The Markdown reference of an OpenAPI 3.0 document (deterministic: same input, same text)."""
    info = spec.get("info", {})
    lines = [
        f"# {info.get('title', 'API')} API reference (version {info.get('version', '?')})",
        "",
        "> Generated from the OpenAPI document the agent serves at `GET /v1/openapi.json`",
        "> (`backends.agent.openapi.openapi_spec()`); do not edit by hand. Regenerate with",
        "> `python assets/make_api_reference.py`; `tests/test_docs.py` fails when it is stale.",
        "",
        f"OpenAPI {spec.get('openapi', '?')}. How to run the agent, and examples with curl: "
        "[the agent](agent.md).",
        "",
        "## Authentication",
        "",
    ]
    schemes = spec.get("components", {}).get("securitySchemes", {})
    for name, scheme in schemes.items():
        if scheme.get("type") == "http" and scheme.get("scheme") == "bearer":
            detail = "an HTTP bearer token, sent as `Authorization: Bearer <token>`"
        else:
            detail = f"type {code(scheme.get('type', '?'))}"
        lines.append(f"- `{name}`: {detail}")
    lines += ["", f"Every operation needs: {auth_text({}, spec)}, unless it says otherwise.", ""]
    lines += ["## Endpoints", "", "| method | path | summary |", "| --- | --- | --- |"]
    found = operations(spec)
    for method, path, operation, _ in found:
        anchor = slug(f"{method.upper()} {path}")
        lines.append(
            f"| [{method.upper()}](#{anchor}) | `{path}` | {cell(operation.get('summary', ''))} |"
        )
    lines.append("")
    for method, path, operation, shared in found:
        lines += operation_block(method, path, operation, shared, spec)
    lines += ["## Schemas", ""]
    for name, schema in spec.get("components", {}).get("schemas", {}).items():
        lines += [f"### {name}", "", *schema_block(schema)]
    while lines and lines[-1] == "":
        lines.pop()
    return "\n".join(lines) + "\n"


def served_spec() -> dict[str, Any]:
    """The document ``GET /v1/openapi.json`` returns (from this checkout, installed or not)."""
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    from backends.agent.openapi import openapi_spec

    return openapi_spec()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="default: %(default)s")
    parser.add_argument(
        "--check", action="store_true", help="exit 1 if the file differs instead of writing it"
    )
    args = parser.parse_args(argv)
    text = render(served_spec())
    if args.check:
        current = args.out.read_text(encoding="utf-8") if args.out.is_file() else ""
        if current != text:
            print(f"{args.out} is stale: run python assets/make_api_reference.py", file=sys.stderr)
            return 1
        return 0
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text, encoding="utf-8")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
