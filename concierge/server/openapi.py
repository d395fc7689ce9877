"""The OpenAPI 3.1 document, generated from the route table and the pydantic models' JSON
schemas — never written by hand, so it cannot drift from the routes the server runs."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from concierge import __version__
from concierge.server.api import ApiRoute, ListOf
from concierge.server.schemas import ErrorBody

__all__ = ["build_openapi"]

REF = "#/components/schemas/{model}"

_ERROR_TEXT = {
    400: "Validation failed: `{error, detail, field?}` naming the field and the rule",
    401: "No API key, or an unknown or revoked one",
    403: "The key's role or sandbox does not allow this",
    404: "Unknown sandbox, source or agent",
    409: "Conflicts with the current state (taken namespace, revoked source, busy session)",
    413: "Body too large",
    415: "The body is not sent as application/json",
    429: "Rate cap reached (`retry_after` seconds; `Retry-After` header)",
    502: "The MCP server or the chat model failed",
}


def _models(routes: Iterable[ApiRoute]) -> list[tuple[type[BaseModel], str]]:
    seen: dict[tuple[type[BaseModel], str], None] = {(ErrorBody, "serialization"): None}
    for route in routes:
        if route.body is not None:
            seen[(route.body, "validation")] = None
        response = route.response
        if isinstance(response, ListOf):
            response = response.model
        if isinstance(response, type) and issubclass(response, BaseModel):
            seen[(response, "serialization")] = None
    return list(seen)


def _strip_unset(node: Any) -> Any:
    """Partial-update models mark "not sent" with an internal ``Unset`` enum: on the wire that
    is simply an omitted field, and null is accepted, so show ``null`` instead."""
    if isinstance(node, dict):
        node = {k: _strip_unset(v) for k, v in node.items()}
        if node.get("default") == "UNSET":
            del node["default"]
        options = node.get("anyOf")
        if isinstance(options, list):
            unset = {"$ref": REF.format(model="Unset")}
            if unset in options:
                options = [o for o in options if o != unset]
                if {"type": "null"} not in options:
                    options.append({"type": "null"})
                node["anyOf"] = options
        return node
    if isinstance(node, list):
        return [_strip_unset(v) for v in node]
    return node


def _schema_of(route: ApiRoute, names: dict[tuple[type[BaseModel], str], dict[str, Any]]) -> dict[str, Any]:
    response = route.response
    if isinstance(response, ListOf):
        return {"type": "array", "items": names[(response.model, "serialization")]}
    if isinstance(response, type) and issubclass(response, BaseModel):
        return names[(response, "serialization")]
    if isinstance(response, dict):
        return response
    return {}


def _error_statuses(route: ApiRoute) -> list[int]:
    statuses = set(route.errors)
    if route.role is not None:
        statuses |= {401, 403}
    if route.body is not None or route.query or route.method in ("POST", "PATCH", "PUT"):
        if route.access != "public":
            statuses.add(400)
    if route.body is not None:
        statuses.add(415)
    if route.path_params:
        statuses.add(404)
    return sorted(statuses)


def _operation(route: ApiRoute, names: dict[tuple[type[BaseModel], str], dict[str, Any]]) -> dict[str, Any]:
    op: dict[str, Any] = {
        "operationId": route.handler.__name__,
        "summary": route.summary,
        "tags": [route.tag],
    }
    if route.description:
        op["description"] = route.description
    params: list[dict[str, Any]] = [
        {"name": p, "in": "path", "required": True, "schema": {"type": "string"}}
        for p in route.path_params]
    params += [{"name": q.name, "in": "query", "required": False, "description": q.description,
                "schema": q.schema} for q in route.query]
    if params:
        op["parameters"] = params
    if route.body is not None:
        op["requestBody"] = {"required": True, "content": {
            "application/json": {"schema": names[(route.body, "validation")]}}}
    elif route.access == "signature":
        op["requestBody"] = {"required": True, "content": {
            "application/json": {"schema": {"description": "Any JSON (or text) event payload."}}}}
    responses: dict[str, Any] = {
        str(route.status): {"description": "Success",
                            "content": {route.media: {"schema": _schema_of(route, names)}}},
    }
    for status in _error_statuses(route):
        responses[str(status)] = {"description": _ERROR_TEXT.get(status, "Error"), "content": {
            "application/json": {"schema": names[(ErrorBody, "serialization")]}}}
    op["responses"] = responses
    op["security"] = [{"bearerAuth": []}] if route.role is not None else []
    return op


def build_openapi(routes: Sequence[ApiRoute], *, extra_paths: dict[str, Any] | None = None) -> dict[str, Any]:
    """The document for ``routes`` (plus hand-described non-table paths such as the MCP mount)."""
    keyed, defs = models_json_schema(_models(routes), ref_template=REF)
    names = {key: schema for key, schema in keyed.items()}
    schemas = _strip_unset(defs.get("$defs", {}))
    schemas.pop("Unset", None)
    paths: dict[str, dict[str, Any]] = {}
    for route in routes:
        paths.setdefault(route.path, {})[route.method.lower()] = _operation(route, names)
    for path, item in (extra_paths or {}).items():
        paths.setdefault(path, {}).update(item)
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Concierge",
            "version": __version__,
            "description": "A registry for users' MCP servers (sandboxes, user_mcp sources, agents, "
                           "the resolved tool catalog, audit) and the conversational concierge.",
        },
        "servers": [{"url": "/"}],
        "paths": paths,
        "components": {
            "schemas": schemas,
            "securitySchemes": {"bearerAuth": {
                "type": "http", "scheme": "bearer",
                "description": "An API key from `concierge keys create` (`ck_...`)."}},
        },
    }
