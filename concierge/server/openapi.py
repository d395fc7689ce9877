"""The OpenAPI 3.1 document, generated from the route table and the pydantic models' JSON
schemas — never written by hand, so it cannot drift from the routes the server runs."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Literal

from pydantic import BaseModel, ValidationError
from pydantic.json_schema import models_json_schema

from concierge import __version__
from concierge.registry.validation import AUTH_SCHEMAS, FIELD_SCHEMAS, trimmed_length_pattern
from concierge.server.api import ApiRoute, ListOf, PageOf
from concierge.wire import ErrorBody

__all__ = ["build_openapi"]

REF = "#/components/schemas/{model}"
# Request bodies the service refuses when they change nothing (`Registry.update`).
_AT_LEAST_ONE_FIELD = frozenset({"UpdateSource"})
# Longer limits stay maxLength (counted before trimming): a pattern of that size is a burden
# on every validator and generator, and only padding past the limit tells them apart.
_MAX_PATTERN_LENGTH = 1000

_ERROR_TEXT = {
    400: "Validation failed: `{error, detail, field?}` naming the field and the rule",
    401: "No API key, or an unknown or revoked one",
    403: "The key's role or sandbox does not allow this",
    404: "Unknown sandbox, source or agent",
    409: "Conflicts with the current state (taken namespace, revoked source, busy session, an "
         "update the stored source cannot take, a tool the agent's catalog does not offer)",
    413: "Body too large",
    415: "The body is not sent as application/json",
    429: "Rate cap reached (`retry_after` seconds; `Retry-After` header)",
    502: "The MCP server or the chat model failed",
}


Mode = Literal["validation", "serialization"]


def _models(routes: Iterable[ApiRoute]) -> list[tuple[type[BaseModel], Mode]]:
    seen: dict[tuple[type[BaseModel], Mode], None] = {(ErrorBody, "serialization"): None}
    for route in routes:
        if route.body is not None:
            seen[(route.body, "validation")] = None
        response = route.response
        if isinstance(response, (ListOf, PageOf)):
            response = response.model
        if isinstance(response, type) and issubclass(response, BaseModel):
            seen[(response, "serialization")] = None
    return list(seen)


# pydantic's names for constraints it could not place on a union member, and the JSON Schema
# keyword each one means on the member it applies to.
_NUMERIC = {"ge": "minimum", "le": "maximum", "gt": "exclusiveMinimum", "lt": "exclusiveMaximum",
            "minimum": "minimum", "maximum": "maximum", "exclusiveMinimum": "exclusiveMinimum",
            "exclusiveMaximum": "exclusiveMaximum"}
_SIZED = {"string": {"minLength": "minLength", "maxLength": "maxLength", "pattern": "pattern"},
          "array": {"minLength": "minItems", "maxLength": "maxItems", "minItems": "minItems",
                    "maxItems": "maxItems"}}


def _push_into_members(node: dict[str, Any]) -> dict[str, Any]:
    """``{"anyOf": [...], "ge": 1}`` -> the constraint inside each member it applies to, in
    JSON Schema's own words (``minimum``), so that generators and validators see it."""
    members = node.get("anyOf")
    if not isinstance(members, list):
        return node
    loose = {k: node[k] for k in list(node) if k in _NUMERIC or k in _SIZED["string"] or k in _SIZED["array"]}
    if not loose:
        return node
    node = {k: v for k, v in node.items() if k not in loose}

    def place(member: dict[str, Any]) -> dict[str, Any]:
        if "anyOf" in member:
            return _push_into_members({**member, **loose})
        kind = member.get("type")
        if kind in ("integer", "number"):
            return {**member, **{_NUMERIC[k]: v for k, v in loose.items() if k in _NUMERIC}}
        if kind in _SIZED:
            return {**member, **{_SIZED[kind][k]: v for k, v in loose.items() if k in _SIZED[kind]}}
        return member

    node["anyOf"] = [place(m) for m in members]
    return node


def _fix_constraints(node: Any) -> Any:
    if isinstance(node, dict):
        node = {k: _fix_constraints(v) for k, v in node.items()}
        return _push_into_members(node)
    if isinstance(node, list):
        return [_fix_constraints(v) for v in node]
    return node


def _accepts_null(model: type[BaseModel], field: str) -> bool:
    try:
        model.model_validate({field: None})
    except ValidationError:
        return False
    return True


def _without_unset(model: type[BaseModel], schema: dict[str, Any]) -> dict[str, Any]:
    """Partial-update models mark "not sent" with an internal ``Unset`` enum: on the wire that
    is simply an omitted field. Where the model takes ``null`` (as "keep" or "clear"), the
    document says so; where it refuses ``null``, the document does not offer it."""
    if "UNSET" in schema.get("description", ""):  # the docstring's word for it stays internal
        schema["description"] = re.sub(r"\s*\([^)]*UNSET[^)]*\)", "", schema["description"])
    properties = schema.get("properties", {})
    for name, prop in properties.items():
        if prop.get("default") == "UNSET":
            del prop["default"]
        options = prop.get("anyOf")
        if not isinstance(options, list) or not _mentions_unset(options):
            continue
        options = _members_without_unset(options)
        null = {"type": "null"}
        if _accepts_null(model, name):
            if null not in options:
                options.append(null)
        else:
            options = [o for o in options if o != null]
        if len(options) == 1:
            del prop["anyOf"]
            prop.update(options[0])
        else:
            prop["anyOf"] = options
    return schema


_UNSET_REF = {"$ref": REF.format(model="Unset")}


def _mentions_unset(options: list[Any]) -> bool:
    return any(o == _UNSET_REF or (isinstance(o, dict) and _mentions_unset(o.get("anyOf", [])))
               for o in options)


def _members_without_unset(options: list[Any]) -> list[Any]:
    """The union's members, nested unions flattened (their constraints carried into each)."""
    out: list[Any] = []
    for option in options:
        if option == _UNSET_REF:
            continue
        if isinstance(option, dict) and isinstance(option.get("anyOf"), list):
            nested = _push_into_members(option)
            out += [m for m in _members_without_unset(nested["anyOf"]) if m not in out]
        elif option not in out:
            out.append(option)
    return out


def _one_field_sent(model: type[BaseModel]) -> dict[str, Any]:
    """"At least one field is sent": a field present and not null, or present as a null that
    means something (clear it) rather than "keep". Written as "some field, and not only
    nulls that keep" (an ``anyOf`` of one option per field, times the ``allOf`` rules, is
    more than generators such as schemathesis take for a model of this many fields)."""
    keep: dict[str, Any] = {}
    for name in model.model_fields:
        try:
            null_counts = bool(model.model_validate({name: None}).sent())  # type: ignore[attr-defined]
        except ValidationError:
            null_counts = False
        keep[name] = False if null_counts else {"type": "null"}
    return {"minProperties": 1, "not": {"properties": keep}}


def _with_rules(schema: dict[str, Any], *, trims: bool = False) -> dict[str, Any]:
    """Add the rules the validators enforce in code (`FIELD_SCHEMAS`) to a request body's fields."""
    for name, prop in schema.get("properties", {}).items():
        if trims:  # a model that trims strings: its lengths count what is left
            for member in prop.get("anyOf", [prop]):
                if member.get("type") != "string" or "pattern" in member:
                    continue
                low, high = member.get("minLength", 0), member.get("maxLength")
                if (low or high) and (high is None or high <= _MAX_PATTERN_LENGTH):
                    pattern = trimmed_length_pattern(low, high)
                    member.pop("minLength", None)
                    member.pop("maxLength", None)
                    member["pattern"] = pattern
        rule = FIELD_SCHEMAS.get(name)
        if rule is None:
            continue
        members = prop.get("anyOf")
        if isinstance(members, list):
            prop["anyOf"] = [_merge(m, rule) if m.get("type") == rule["type"] else m for m in members]
        elif prop.get("type") == rule["type"]:
            schema["properties"][name] = _merge(prop, rule)
    return schema


def _merge(member: dict[str, Any], rule: dict[str, Any]) -> dict[str, Any]:
    """``rule`` over ``member``; a rule's ``None`` removes that keyword."""
    merged = {**member, **rule}
    if "items" in member and "items" in rule:
        merged["items"] = {**member["items"], **rule["items"]}
    return {k: v for k, v in merged.items() if v is not None}


def _schema_of(route: ApiRoute, names: Mapping[tuple[Any, Mode], dict[str, Any]]) -> dict[str, Any]:
    response = route.response
    if isinstance(response, ListOf):
        return {"type": "array", "items": names[(response.model, "serialization")]}
    if isinstance(response, PageOf):
        return {"type": "object", "required": ["items", "next_cursor", "total"],
                "properties": {
                    "items": {"type": "array", "items": names[(response.model, "serialization")]},
                    "next_cursor": {"type": ["string", "null"], "description":
                                    "Send it back as `cursor` for the next page; null on the last page."},
                    "total": {"type": "integer", "minimum": 0,
                              "description": "How many the whole list has, with the same filters."}}}
    if isinstance(response, type) and issubclass(response, BaseModel):
        return names[(response, "serialization")]
    if isinstance(response, dict):
        return response
    return {}


def _sse_event(schema: dict[str, Any]) -> dict[str, Any]:
    """For an event stream, OpenAPI 3.1's ``schema`` describes one event: its fields."""
    return {"type": "object", "description": schema.get("description", "A Server-Sent Event."),
            "required": ["data"],
            "properties": {"event": {"type": "string", "description": "The event's name."},
                           "data": {"type": "string", "description": "The event's JSON payload."},
                           "id": {"type": "string"}, "retry": {"type": "integer"}}}


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


def _operation(route: ApiRoute, names: Mapping[tuple[Any, Mode], dict[str, Any]]) -> dict[str, Any]:
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
    success = _schema_of(route, names)
    if route.media == "text/event-stream":
        success = _sse_event(success)
    responses: dict[str, Any] = {
        str(route.status): {"description": "Success", "content": {route.media: {"schema": success}}},
    }
    for status in _error_statuses(route):
        responses[str(status)] = {"description": _ERROR_TEXT.get(status, "Error"), "content": {
            "application/json": {"schema": names[(ErrorBody, "serialization")]}}}
    op["responses"] = responses
    op["security"] = [{"bearerAuth": []}] if route.role is not None else []
    return op


def build_openapi(routes: Sequence[ApiRoute], *, extra_paths: dict[str, Any] | None = None) -> dict[str, Any]:
    """The document for ``routes`` (plus hand-described non-table paths such as the MCP mount)."""
    models = _models(routes)
    keyed, defs = models_json_schema(models, ref_template=REF)
    names = {key: schema for key, schema in keyed.items()}
    schemas = defs.get("$defs", {})
    schemas.pop("Unset", None)
    for model, mode in models:
        if mode == "validation" and model.__name__ in schemas:
            trims = bool(model.model_config.get("str_strip_whitespace"))
            schema = _with_rules(_without_unset(model, schemas[model.__name__]), trims=trims)
            if model.__name__ in AUTH_SCHEMAS:
                schema["allOf"] = AUTH_SCHEMAS[model.__name__]
            if model.__name__ in _AT_LEAST_ONE_FIELD:
                schema.update(_one_field_sent(model))
            schemas[model.__name__] = schema
    schemas = _fix_constraints(schemas)
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
