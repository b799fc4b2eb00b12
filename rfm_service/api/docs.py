"""A human docs page that works offline: the OpenAPI document rendered on
the server (no CDN scripts, no network fetches from the browser)."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, current_app, render_template_string, url_for

bp = Blueprint("api_docs_page", __name__)
_METHODS = ("get", "put", "post", "delete", "patch", "head", "options")

_TEMPLATE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<title>{{ info.title }} — API</title>
<style>
body{font:15px/1.5 system-ui,sans-serif;max-width:60rem;margin:2rem auto;padding:0 1rem;color:#222}
h2{margin-top:2.5rem;border-bottom:1px solid #ccc}
.op{margin:1.5rem 0;padding:.5rem 1rem;border-left:4px solid #36c;background:#f6f8fb}
.m{font-weight:bold;text-transform:uppercase;color:#36c}
table{border-collapse:collapse;margin:.5rem 0}
td,th{border:1px solid #ddd;padding:.2rem .5rem;text-align:left;vertical-align:top}
code{background:#eee;padding:0 .2rem}
</style></head><body>
<h1>{{ info.title }} <small>v{{ info.version }}</small></h1>
<p>{{ info.description }}</p>
<p>Machine-readable: <a href="{{ spec_url }}">OpenAPI {{ openapi }} document</a>.</p>
<h2>Endpoints</h2>
{% for path, ops in paths %}{% for method, op in ops %}
<div class="op" id="{{ op.operationId or (method ~ path) }}">
<p><span class="m">{{ method }}</span> <code>{{ path }}</code> — {{ op.summary }}</p>
{% if op.description %}<p>{{ op.description }}</p>{% endif %}
{% if op.parameters %}<table><tr><th>parameter</th><th>in</th><th>type</th><th>description</th></tr>
{% for p in op.parameters %}<tr><td><code>{{ p.name }}</code>{% if p.required %} *{% endif %}</td>
<td>{{ p.in }}</td><td>{{ type_of(p.schema) }}</td>
<td>{{ p.description or '' }}</td></tr>{% endfor %}</table>{% endif %}
{% if op.requestBody %}<p>Body (JSON): {% for ct, body in op.requestBody.content.items() %}
{{ ref_name(body.schema) }}{% endfor %}</p>{% endif %}
<table><tr><th>status</th><th>meaning</th><th>body</th></tr>
{% for code, r in op.responses|dictsort %}<tr><td>{{ code }}</td>
<td>{{ response(r).description }}</td>
<td>{% for ct, c in (response(r).content or {}).items() %}{{ ref_name(c.schema) }}{% endfor %}</td>
</tr>{% endfor %}</table></div>
{% endfor %}{% endfor %}
<h2>Schemas</h2>
{% for name, schema in schemas %}<h3 id="schema-{{ name }}">{{ name }}</h3>
<table><tr><th>field</th><th>type</th><th>description</th></tr>
{% for field, prop in (schema.properties or {}).items() %}<tr><td><code>{{ field }}</code></td>
<td>{{ type_of(prop) }}</td><td>{{ prop.description or '' }}</td></tr>{% endfor %}</table>
{% endfor %}
</body></html>
"""


def _ref_name(schema: dict[str, Any] | None) -> str:
    if not schema:
        return ""
    if "$ref" in schema:
        return str(schema["$ref"]).rsplit("/", 1)[-1]
    return str(schema.get("type", "object"))


def _type_of(prop: dict[str, Any]) -> str:
    if "$ref" in prop:
        return _ref_name(prop)
    if prop.get("type") == "array":
        return f"array of {_type_of(prop.get('items', {}))}"
    kind = prop.get("type", "any")
    kind = "/".join(kind) if isinstance(kind, list) else str(kind)
    if prop.get("format"):
        kind += f" ({prop['format']})"
    if prop.get("nullable"):
        kind += ", nullable"
    return kind


def _operations(item: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """The operations of a path item, each with the path's own parameters."""
    shared = item.get("parameters", [])
    return [
        (method, {**op, "parameters": shared + op.get("parameters", [])})
        for method, op in item.items()
        if method in _METHODS
    ]


@bp.route("/api/docs", methods=["GET"], strict_slashes=False)
def docs_page() -> str:
    api = current_app.extensions["flask-smorest"]["apis"][""]["ext_obj"]
    spec = api.spec.to_dict()
    components = spec.get("components", {})

    def response(r: dict[str, Any]) -> dict[str, Any]:
        if "$ref" in r:  # shared error responses live under components
            return components.get("responses", {}).get(_ref_name(r), {})
        return r

    return render_template_string(
        _TEMPLATE,
        info=spec["info"],
        openapi=spec["openapi"],
        spec_url=url_for("api-docs.openapi_json"),
        paths=[(path, _operations(item)) for path, item in spec["paths"].items()],
        schemas=sorted(components.get("schemas", {}).items()),
        ref_name=_ref_name,
        type_of=_type_of,
        response=response,
    )
