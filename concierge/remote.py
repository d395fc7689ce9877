"""`RemoteBackend`: the `Backend` protocol over HTTP, against a ``concierge serve``.

Every method is one (sometimes two) REST calls with httpx2; answers are parsed back into the
registry's models, and ``{"error", "detail"}`` answers become the same `ConciergeError`
subclasses `LocalBackend` raises (`concierge.wire.error_from_response`), so the CLI,
the REPL and the concierge behave identically against a local or a remote registry.

``sandbox=None`` means what it means locally: for sandbox-scoped calls, the key's default
sandbox (``GET /api/v1/me``: the key's own sandbox, else ``default``); for calls on a source
by id, wherever that source lives (``GET /api/v1/storage/sources/{id}`` finds it first).
"""

from __future__ import annotations

from typing import Any, TypeVar
from urllib.parse import quote

import httpx2
from pydantic import BaseModel, SecretStr, TypeAdapter

from concierge.errors import ServerTimeout, ServerUnreachable
from concierge.registry.catalog_models import (
    ApprovalResult,
    CatalogResult,
    HeldTool,
    PullResult,
    SameUrl,
    ToolCallOutcome,
)
from concierge.registry.models import Agent, AuditEntry, Outcome, RegisteredOutcome, Sandbox, SourceView
from concierge.registry.pages import MAX_LIMIT, Page
from concierge.wire import CatalogView, error_from_response

__all__ = ["RemoteBackend"]

M = TypeVar("M", bound=BaseModel)
PROBE_GRACE_S = 130.0
"""Lifecycle calls run a health check on the server (connect_timeout is at most 120 s)."""


def _q(part: str) -> str:
    return quote(part, safe="")


class RemoteBackend:
    """The registry of a remote ``concierge serve``. ``api_key`` is sent as a bearer token."""

    def __init__(self, api_url: str, *, api_key: str | None = None, timeout: float = 30.0,
                 transport: httpx2.AsyncBaseTransport | None = None) -> None:
        self.api_url = api_url.rstrip("/")
        headers = {"Accept": "application/json", "User-Agent": "concierge-remote"}
        if api_key:
            headers["Authorization"] = f"Bearer {api_key}"
        self.timeout = timeout
        self._http = httpx2.AsyncClient(base_url=self.api_url, headers=headers,
                                        timeout=httpx2.Timeout(timeout), transport=transport)
        self._default_sandbox: str | None = None

    def __repr__(self) -> str:  # never the key
        return f"RemoteBackend({self.api_url!r})"

    # -- plumbing ---------------------------------------------------------------------------

    async def _request(self, method: str, path: str, *, json: Any = None,
                       params: dict[str, Any] | None = None, slow: bool = False) -> Any:
        timeout = httpx2.Timeout(max(self.timeout, PROBE_GRACE_S)) if slow else None
        try:
            kwargs: dict[str, Any] = {"json": json, "params": {k: v for k, v in (params or {}).items()
                                                               if v is not None}}
            if timeout is not None:
                kwargs["timeout"] = timeout
            response = await self._http.request(method, path, **kwargs)
        except httpx2.TimeoutException:
            raise ServerTimeout(f"the concierge server at {self.api_url} did not answer in time") from None
        except httpx2.HTTPError as exc:
            raise ServerUnreachable(f"cannot reach the concierge server at {self.api_url} "
                                    f"({type(exc).__name__}: {exc})") from None
        try:
            body = response.json() if response.content else None
        except ValueError:
            body = None
        if response.status_code >= 400:
            raise error_from_response(response.status_code, body)
        return body

    async def _get(self, path: str, model: type[M], **params: Any) -> M:
        return model.model_validate(await self._request("GET", path, params=params))

    async def _page(self, path: str, model: type[M], **params: Any) -> Page[M]:
        return Page[model].model_validate(await self._request("GET", path, params=params))  # type: ignore[valid-type]

    async def _list(self, path: str, model: type[M], **params: Any) -> list[M]:
        """Every page of a list (for callers that need all of it)."""
        items: list[M] = []
        cursor: str | None = None
        while True:
            page = await self._page(path, model, **params, limit=MAX_LIMIT, cursor=cursor)
            items.extend(page.items)
            cursor = page.next_cursor
            if cursor is None:
                return items

    async def _sandbox(self, ref: str | None) -> str:
        if ref is not None:
            return ref
        if self._default_sandbox is None:
            me = await self._request("GET", "/api/v1/me")
            self._default_sandbox = str(me["default_sandbox"]["id"])
        return self._default_sandbox

    async def _sb_path(self, ref: str | None) -> str:
        return f"/api/v1/storage/sandboxes/{_q(await self._sandbox(ref))}"

    async def _source_path(self, source_id: str, ref: str | None) -> str:
        if ref is None:  # like LocalBackend: the source wherever it lives
            found = await self._request("GET", f"/api/v1/storage/sources/{_q(source_id)}")
            ref = str(found["sandbox_id"])
        return f"/api/v1/storage/sandboxes/{_q(ref)}/sources/{_q(source_id)}"

    # -- sandboxes --------------------------------------------------------------------------

    async def list_sandboxes(self) -> list[Sandbox]:
        return await self._list("/api/v1/storage/sandboxes", Sandbox)

    async def page_sandboxes(self, *, limit: int | None = None,
                             cursor: str | None = None) -> Page[Sandbox]:
        return await self._page("/api/v1/storage/sandboxes", Sandbox, limit=limit, cursor=cursor)

    async def create_sandbox(self, name: str) -> Sandbox:
        return Sandbox.model_validate(await self._request(
            "POST", "/api/v1/storage/sandboxes", json={"name": name}))

    async def get_sandbox(self, ref: str | None = None) -> Sandbox:
        if ref is None:
            me = await self._request("GET", "/api/v1/me")
            return Sandbox.model_validate(me["default_sandbox"])
        return await self._get(f"/api/v1/storage/sandboxes/{_q(ref)}", Sandbox)

    # -- sources ----------------------------------------------------------------------------

    async def list_sources(self, *, sandbox: str | None = None,
                           status: str | None = None) -> list[SourceView]:
        if sandbox is None:
            return await self._list("/api/v1/storage/sources", SourceView, status=status)
        return await self._list(await self._sb_path(sandbox) + "/sources", SourceView, status=status)

    async def page_sources(self, *, sandbox: str | None = None, status: str | None = None,
                           limit: int | None = None, cursor: str | None = None) -> Page[SourceView]:
        path = "/api/v1/storage/sources" if sandbox is None else await self._sb_path(sandbox) + "/sources"
        return await self._page(path, SourceView, status=status, limit=limit, cursor=cursor)

    async def get_source(self, source_id: str, *, sandbox: str | None = None) -> SourceView:
        if sandbox is None:
            return await self._get(f"/api/v1/storage/sources/{_q(source_id)}", SourceView)
        return await self._get(await self._source_path(source_id, sandbox), SourceView)

    async def sources_at_url(self, url: str, *, sandbox: str | None = None) -> SameUrl:
        """The server's list read whole (no API route filters by URL), matched here."""
        from concierge.mcp_client.endpoint import same_url

        hits = [(s.name, s.id) for s in await self.list_sources(sandbox=sandbox)
                if s.status.value != "disconnected" and s.base_url and same_url(s.base_url, url)]
        return SameUrl(names=hits[:5], total=len(hits))

    async def register_source(self, body: dict[str, Any], *, sandbox: str | None = None) -> Outcome:
        data = await self._request("POST", await self._sb_path(sandbox) + "/sources/user-mcp",
                                   json=_plain(body), slow=True)
        secret = data.pop("webhook_secret", None)
        return RegisteredOutcome(**data, webhook_secret=SecretStr(secret) if secret else None)

    async def update_source(self, source_id: str, body: dict[str, Any], *,
                            sandbox: str | None = None) -> Outcome:
        path = await self._source_path(source_id, sandbox)
        return Outcome.model_validate(await self._request("PATCH", path + "/user-mcp", json=_plain(body),
                                                          slow=True))

    async def _lifecycle(self, source_id: str, sandbox: str | None, suffix: str) -> Outcome:
        path = await self._source_path(source_id, sandbox)
        return Outcome.model_validate(await self._request("POST", path + suffix, slow=True))

    async def test_source(self, source_id: str, *, sandbox: str | None = None) -> Outcome:
        return await self._lifecycle(source_id, sandbox, "/user-mcp/test")

    async def authorize_source(self, source_id: str, *, sandbox: str | None = None) -> Outcome:
        """A new OAuth sign-in held by the server; the outcome carries ``authorize_url``."""
        return await self._lifecycle(source_id, sandbox, "/user-mcp/authorize")

    async def wait_signed_in(self, source_id: str, *, sandbox: str | None = None,
                             timeout: float = 600.0, every: float = 0.5) -> Outcome:
        """Until the source leaves ``auth_required`` (the server's callback got the sign-in and
        ran the health check), or ``timeout``; the source as an outcome."""
        import anyio

        with anyio.move_on_after(timeout):
            while (await self.get_source(source_id, sandbox=sandbox)).status.value == "auth_required":
                await anyio.sleep(every)
        source = await self.get_source(source_id, sandbox=sandbox)
        detail = None if source.status.value != "auth_required" else (
            f"nobody finished signing in within {timeout:g} s")
        return Outcome(data_source_id=source.id, status=source.status.value, name=source.name,
                       ingestion_mode=source.ingestion_mode, health_error=source.health_error, detail=detail)

    async def pause_source(self, source_id: str, *, sandbox: str | None = None) -> Outcome:
        return await self._lifecycle(source_id, sandbox, "/pause")

    async def resume_source(self, source_id: str, *, sandbox: str | None = None) -> Outcome:
        return await self._lifecycle(source_id, sandbox, "/resume")

    async def revoke_source(self, source_id: str, *, sandbox: str | None = None) -> Outcome:
        return await self._lifecycle(source_id, sandbox, "/user-mcp/revoke")

    async def delete_source(self, source_id: str, *, sandbox: str | None = None) -> None:
        await self._request("DELETE", await self._source_path(source_id, sandbox))

    async def held_tools(self, source_id: str, *, sandbox: str | None = None) -> list[HeldTool]:
        path = await self._source_path(source_id, sandbox)
        return TypeAdapter(list[HeldTool]).validate_python(await self._request("GET", path + "/user-mcp/held-tools"))

    async def approve_tools(self, source_id: str, tools: list[str] | None = None, *,
                            sandbox: str | None = None) -> ApprovalResult:
        path = await self._source_path(source_id, sandbox)
        return ApprovalResult.model_validate(await self._request(
            "POST", path + "/user-mcp/approve", json={"tools": tools}))

    async def pull_source(self, source_id: str, *, sandbox: str | None = None) -> PullResult:
        path = await self._source_path(source_id, sandbox)
        return PullResult.model_validate(await self._request("POST", path + "/pull", slow=True))

    # -- agents, audit ----------------------------------------------------------------------

    async def list_agents(self, *, sandbox: str | None = None) -> list[Agent]:
        return await self._list(await self._sb_path(sandbox) + "/agents", Agent)

    async def page_agents(self, *, sandbox: str | None = None, limit: int | None = None,
                          cursor: str | None = None) -> Page[Agent]:
        return await self._page(await self._sb_path(sandbox) + "/agents", Agent, limit=limit, cursor=cursor)

    async def get_agent(self, slug: str, *, sandbox: str | None = None) -> Agent:
        return await self._get(await self._sb_path(sandbox) + f"/agents/{_q(slug)}", Agent)

    async def create_agent(self, body: dict[str, Any], *, sandbox: str | None = None) -> Agent:
        return Agent.model_validate(await self._request(
            "POST", await self._sb_path(sandbox) + "/agents", json=_plain(body)))

    async def update_agent(self, slug: str, body: dict[str, Any], *,
                           sandbox: str | None = None) -> Agent:
        return Agent.model_validate(await self._request(
            "PATCH", await self._sb_path(sandbox) + f"/agents/{_q(slug)}", json=_plain(body)))

    async def audit(self, *, sandbox: str | None = None, limit: int = 50) -> list[AuditEntry]:
        return (await self.page_audit(sandbox=sandbox, limit=max(1, min(int(limit), MAX_LIMIT)))).items

    async def page_audit(self, *, sandbox: str | None = None, limit: int | None = None,
                         cursor: str | None = None) -> Page[AuditEntry]:
        path = "/api/v1/storage/audit" if sandbox is None else await self._sb_path(sandbox) + "/audit"
        return await self._page(path, AuditEntry, limit=limit, cursor=cursor)

    # -- catalog and gateway ----------------------------------------------------------------

    async def agent_tools(self, slug: str | None = None, *, sandbox: str | None = None,
                          app: str | None = None) -> CatalogResult:
        base = await self._sb_path(sandbox)
        path = base + (f"/agents/{_q(slug)}/tools" if slug else "/tools")
        data = await self._request("GET", path, params={"app": app}, slow=True)
        return CatalogView.model_validate(data).to_result()

    async def call_tool(self, name: str, arguments: dict[str, Any] | None, *, agent: str,
                        sandbox: str | None = None) -> ToolCallOutcome:
        path = await self._sb_path(sandbox) + f"/agents/{_q(agent)}/tools/call"
        return ToolCallOutcome.model_validate(await self._request(
            "POST", path, json={"name": name, "arguments": arguments}, slow=True))

    async def aclose(self) -> None:
        await self._http.aclose()


def _plain(body: dict[str, Any]) -> dict[str, Any]:
    """A request body as JSON: secrets unwrapped (they go to the server on purpose), models dumped."""
    out: dict[str, Any] = {}
    for key, value in body.items():
        if isinstance(value, SecretStr):
            value = value.get_secret_value()
        elif isinstance(value, BaseModel):
            value = value.model_dump(mode="json")
        elif isinstance(value, list):
            value = [v.model_dump(mode="json") if isinstance(v, BaseModel) else v for v in value]
        out[key] = value
    return out
