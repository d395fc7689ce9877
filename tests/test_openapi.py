"""The OpenAPI document at /openapi.json against the live routes (both directions), its own
consistency, and the reference request shapes (seeds 000/001)."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx2
import pytest
from jsonschema import Draft202012Validator
from starlette.routing import Route

from concierge.registry import RegisterSource, UpdateSource
from concierge.server.app import ROUTE_TABLE, _PathApp
from concierge.server.gateway_mount import MCP_PATH, GatewayMount
from tests.server_fixtures import start_api_server

SEEDS = Path("/work/shared/seeds")


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, dict[str, Any], Any]]:
    server, registry = start_api_server(tmp_path_factory.mktemp("openapi-home"))
    try:
        with httpx2.Client(base_url=server.url_base) as c:
            doc = c.get("/openapi.json").json()
        yield server.url_base, doc, server
    finally:
        server.stop()
        registry.close()


def _live_operations(app: Any) -> set[tuple[str, str]]:
    ops = set()
    for route in app.routes:
        assert isinstance(route, Route)
        if isinstance(route.app, _PathApp):
            ops |= {(m, route.path) for m in route.app.handlers if m != "HEAD"}
        elif isinstance(route.app, GatewayMount):
            ops |= {(m, route.path) for m in ("GET", "POST", "DELETE")}
        else:  # pragma: no cover - a route added outside the table
            raise AssertionError(f"route {route.path} is not from the route table")
    return ops


def test_the_document_lists_exactly_the_live_routes(live):
    _, doc, server = live
    app = server._server.config.app  # the Starlette app uvicorn is serving
    documented = {(m.upper(), p) for p, item in doc["paths"].items() for m in item}
    assert documented == _live_operations(app)
    assert {(r.method, r.path) for r in ROUTE_TABLE} | {(m, MCP_PATH) for m in ("GET", "POST", "DELETE")} \
        == documented


def test_every_documented_operation_is_routed_and_guarded_as_documented(live):
    url, doc, _ = live
    with httpx2.Client(base_url=url) as c:
        for path, item in doc["paths"].items():
            concrete = re.sub(r"{[^}]+}", "x", path)
            for method, op in item.items():
                r = c.request(method.upper(), concrete, json={} if method != "get" else None)
                assert r.status_code != 405, (method, path)
                assert not (r.status_code == 404 and r.json().get("detail", "").startswith("no route")), \
                    (method, path)
                if op["security"]:
                    assert r.status_code == 401 and "401" in op["responses"], (method, path, r.text)
                else:
                    assert r.status_code != 401 or "401" in op["responses"], (method, path)
                assert str(r.status_code) in op["responses"], (method, path, r.status_code, r.text[:200])


def _refs(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "$ref":
                yield value
            else:
                yield from _refs(value)
    elif isinstance(node, list):
        for value in node:
            yield from _refs(value)


def test_the_document_is_self_consistent(live):
    _, doc, _ = live
    assert doc["openapi"] == "3.1.0" and doc["info"]["title"] == "Concierge"
    schemas = doc["components"]["schemas"]
    refs = set(_refs(doc))
    assert refs and all(r.startswith("#/components/schemas/") for r in refs)
    assert {r.rsplit("/", 1)[1] for r in refs} <= set(schemas)
    operation_ids = [op["operationId"] for item in doc["paths"].values() for op in item.values()]
    assert len(operation_ids) == len(set(operation_ids))
    for path, item in doc["paths"].items():
        declared_in_path = set(re.findall(r"{([^}]+)}", path))
        for op in item.values():
            params = {p["name"] for p in op.get("parameters", []) if p["in"] == "path"}
            assert params == declared_in_path, path
            for status in op["responses"]:
                assert re.fullmatch(r"[1-5]\d\d", status)
    for name, schema in schemas.items():
        Draft202012Validator.check_schema(schema)
    assert "Unset" not in json.dumps(doc)  # the partial-update sentinel is an internal detail


def _component(doc: dict[str, Any], name: str) -> Draft202012Validator:
    return Draft202012Validator({"$ref": f"#/components/schemas/{name}", "components": doc["components"]})


def _seed_fields(name: str) -> set[str]:
    text = next(SEEDS.glob(f"{name}_*.txt")).read_text()
    body = text[text.index("--data '") + len("--data '"):]
    return set(json.loads(body[:body.index("\n'")]))


def test_request_bodies_follow_the_reference_and_the_models(live):
    _, doc, _ = live
    register = doc["paths"]["/api/v1/storage/sandboxes/{sandbox_id}/sources/user-mcp"]["post"]
    assert register["requestBody"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/RegisterSource"}
    props = doc["components"]["schemas"]["RegisterSource"]["properties"]
    assert set(props) == set(RegisterSource.model_fields)
    assert _seed_fields("001") <= set(props)
    # base_url is required unless transport is stdio (an allOf rule: see AUTH_SCHEMAS)
    assert set(doc["components"]["schemas"]["RegisterSource"]["required"]) == {"name", "auth_kind"}
    assert not _component(doc, "RegisterSource").is_valid({"name": "x", "auth_kind": "none"})
    _component(doc, "RegisterSource").validate({"name": "x", "auth_kind": "none", "transport": "stdio",
                                                "command": "uvx", "args": ["mcp-server-git"]})
    update_props = doc["components"]["schemas"]["UpdateSource"]["properties"]
    assert _seed_fields("000") <= set(update_props) and set(update_props) == set(UpdateSource.model_fields)
    assert "required" not in doc["components"]["schemas"]["UpdateSource"]

    good = {"name": "Acme", "base_url": "https://mcp.acme.internal", "auth_kind": "bearer", "token": "t",
            "allowed_tools": ["search"], "ingest_tool_calls": [{"name": "list_recent_docs",
                                                                "arguments": {"limit": 50}}],
            "rate_cap_per_minute": 60, "webhook_rate_cap_per_minute": 600}
    _component(doc, "RegisterSource").validate(good)
    assert not _component(doc, "RegisterSource").is_valid({**good, "rate_cap_per_minute": 601})
    assert not _component(doc, "RegisterSource").is_valid({**good, "surprise": True})
    _component(doc, "UpdateSource").validate({"name": None, "token": "new"})  # null keeps a value


def test_the_outcome_shape_is_the_reference_one(live):
    _, doc, _ = live
    outcome = doc["components"]["schemas"]["Outcome"]["properties"]
    # the reference's shape, plus the sign-in link of an OAuth source (status auth_required)
    assert set(outcome) == {"data_source_id", "status", "name", "ingestion_mode", "health_error", "error",
                            "detail", "authorize_url"}
    registered = doc["components"]["schemas"]["RegisterResponse"]["properties"]
    assert set(registered) == set(outcome) | {"webhook_secret"}
    error = doc["components"]["schemas"]["ErrorBody"]
    assert {"error", "detail"} <= set(error["required"])
