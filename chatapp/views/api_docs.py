"""The API's documentation: the OpenAPI document (/openapi.json) and a readable page (/docs).

quart-schema builds the document from the API views' models. Its own docs pages load
JavaScript from a CDN, which our Content-Security-Policy forbids, so /docs is rendered here
on the server from the same document: no script, nothing to relax in the CSP.
"""
from __future__ import annotations

from typing import Any

from quart import Blueprint, Quart, current_app, render_template
from quart_schema import OpenAPIProvider, QuartSchema
from werkzeug.routing.rules import Rule

from ..apischema import Error

bp = Blueprint("api_docs", __name__)

API_PREFIX = "/api/"
ERRORS = {
    400: "The request makes no sense here (a bad cursor, a blank message, a model that is not offered).",
    401: "No API token, or one that is unknown, revoked or belongs to a disabled account.",
    404: "No such thing, or it is not yours (also for malformed ids).",
    413: "The message is longer than CHATAPP_MAX_MESSAGE_CHARS.",
    422: "The body or query string does not fit the schema.",
    429: "Too many messages per minute, or too many answers running; see Retry-After.",
}


# Before OpenAPI 3.2 the schema of text/event-stream describes one event (as schemathesis reads it).
SSE_EVENT = {
    "type": "object",
    "properties": {
        "event": {"type": "string", "enum": ["delta", "title", "done"]},
        "data": {"type": "string", "contentMediaType": "application/json"},
        "id": {"type": "string"},
    },
    "required": ["event", "data"],
}


class ApiProvider(OpenAPIProvider):
    """Documents only /api/ routes, and adds the error answers every operation can give."""

    def generate_rules(self):
        """The API's rules only: HTML pages and form posts are not part of the JSON API."""
        for rule in super().generate_rules():
            if rule.rule.startswith(API_PREFIX):
                yield rule

    def build_paths(self, rule: Rule) -> tuple[dict, dict]:
        """quart-schema's paths, plus documented errors, 204s and event streams."""
        paths, components = super().build_paths(rule)
        error_object, error_components = self.build_response_object(Error, None)
        components.update(error_components)
        components["Error"] = error_object["content"]["application/json"]["schema"]
        error_object["content"]["application/json"]["schema"] = {"$ref": "#/components/schemas/Error"}
        view = self._app.view_functions[rule.endpoint]
        for operations in paths.values():
            for method, operation in operations.items():
                responses = dict(operation["responses"])
                codes = [401]
                if rule.arguments:
                    codes.append(404)
                if operation.get("requestBody") or any(p["in"] == "query" for p in operation["parameters"]):
                    codes += [400, 422]
                if method == "post" and rule.rule.endswith("/messages"):
                    codes += [400, 413, 429]
                elif method in ("post", "patch") or getattr(view, "event_stream", False):
                    codes.append(400)  # e.g. stopping or streaming a message that is not an answer
                for code in codes:
                    responses.setdefault(code, {**error_object, "description": ERRORS[code]})
                if method == "delete":
                    responses.setdefault(204, {"description": "Deleted."})
                if getattr(view, "event_stream", False):
                    responses.setdefault(200, {
                        "description": "Server-Sent Events; resume with Last-Event-ID. `delta`: {\"text\"}; "
                                       "`title`: {\"thread_id\", \"title\"}; `done`: the finished MessageOut.",
                        "content": {"text/event-stream": {"schema": SSE_EVENT}},
                    })
                operation["responses"] = responses
        return paths, components


def openapi_document() -> dict[str, Any]:
    """The OpenAPI document of the JSON API."""
    return current_app.extensions["QUART_SCHEMA"].openapi_provider.schema()


@bp.get("/openapi.json")
async def openapi():
    """The OpenAPI 3.1 document of /api/v1 (public: it holds no data)."""
    return openapi_document()


def _type_name(schema: dict[str, Any]) -> str:
    """A short human name for a JSON Schema type ("string | null", "array of MessageOut")."""
    if "$ref" in schema:
        return schema["$ref"].rsplit("/", 1)[-1]
    if schema.get("type") == "object" and "title" in schema:
        return schema["title"]
    if "anyOf" in schema:
        return " | ".join(_type_name(s) for s in schema["anyOf"])
    if schema.get("type") == "array":
        return "array of " + _type_name(schema.get("items", {}))
    if "enum" in schema:
        return " | ".join(f'"{v}"' for v in schema["enum"])
    if "const" in schema:
        return f'"{schema["const"]}"'
    return schema.get("format") or schema.get("type", "any")


def _fields(schema: dict[str, Any], components: dict[str, Any]) -> list[dict[str, str]]:
    """The properties of a (possibly referenced) object schema as table rows."""
    if "$ref" in schema:
        schema = components.get(schema["$ref"].rsplit("/", 1)[-1], {})
    required = set(schema.get("required", []))
    return [
        {"name": name, "type": _type_name(prop), "required": "yes" if name in required else "no",
         "description": prop.get("description", "")}
        for name, prop in schema.get("properties", {}).items()
    ]


def describe(document: dict[str, Any]) -> tuple[list[dict[str, Any]], dict[str, list[dict[str, str]]]]:
    """Every operation of the document flattened for the docs page, and the models they use."""
    components = document.get("components", {}).get("schemas", {})
    schemas = dict(components)
    operations = []
    for path, methods in document["paths"].items():
        for method, operation in methods.items():
            body = operation.get("requestBody", {}).get("content", {}).get("application/json", {})
            responses = []
            for code, response in sorted(operation["responses"].items(), key=lambda item: str(item[0])):
                content = response.get("content", {})
                schema = next(iter(content.values()), {}).get("schema", {}) if content else {}
                if schema.get("type") == "object" and "title" in schema:
                    schemas.setdefault(schema["title"], schema)
                responses.append({"code": code, "type": _type_name(schema) if schema else "",
                                  "description": response.get("description", "")})
            operations.append({
                "method": method.upper(), "path": path, "summary": operation.get("summary", ""),
                "description": operation.get("description", ""),
                "parameters": [{"name": p["name"], "in": p["in"], "type": _type_name(p.get("schema", {})),
                                "required": "yes" if p.get("required") else "no",
                                "description": p.get("description", "")} for p in operation["parameters"]],
                "body": _fields(body["schema"], components) if body else [],
                "responses": responses,
            })
    models = {name: _fields(schema, components) for name, schema in sorted(schemas.items())
              if schema.get("properties")}
    return operations, models


@bp.get("/docs")
async def docs():
    """A readable page listing every API operation (rendered from /openapi.json)."""
    document = openapi_document()
    operations, models = describe(document)
    return await render_template("api_docs.html", operations=operations, models=models, info=document["info"])


def init_app(app: Quart) -> None:
    """Set up quart-schema for the JSON API only.

    Its own routes are turned off (ours above serve the document, and a docs page that works
    under our CSP). quart-schema also wraps app.make_response to turn models into JSON; that
    leaves strings, Response objects and plain dicts of the HTML views unchanged.
    """
    QuartSchema(
        app,
        openapi_path=None, redoc_ui_path=None, scalar_ui_path=None, swagger_ui_path=None,
        info={"title": "chatapp API", "version": "1",
              "description": "Your threads and messages as JSON. Authenticate with an API token from "
                             "Settings: `Authorization: Bearer chatapp_...`."},
        security_schemes={"bearer": {"type": "http", "scheme": "bearer"}},
        security=[{"bearer": []}],
        openapi_provider_class=ApiProvider,
    )
