"""Pull: run a source's ``ingest_tool_calls`` and keep what changed.

Each call goes through the gateway path (source active, rate cap, pooled session, call
timeout), so a pull can never exceed the source's cap. A result is stored with its time and a
SHA-256 of its content; a result identical to the last one stored for the same call (tool and
arguments) is counted as unchanged and not stored again. Tool errors are reported, not
stored. The first rate-cap or connection failure stops the pull; the rest are counted as
skipped. The per-source ``allowed_tools`` governs what agents are offered, not what the
owner's own ingest calls may run, so it is not applied here.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from pydantic import BaseModel

from concierge.errors import ConnectorError, NothingToPull, RateLimited, SourceInactive
from concierge.registry.catalog_models import PullResult, ToolCallOutcome
from concierge.registry.gateway import Gateway
from concierge.registry.ingest_rows import IngestRows
from concierge.registry.models import SourceStatus
from concierge.registry.service import Registry

__all__ = ["IngestedResult", "Ingestor", "call_key", "content_hash"]


def _canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)


def call_key(tool_name: str, arguments: dict[str, Any]) -> str:
    """Identifies one ingest call: the tool and its arguments."""
    return hashlib.sha256(_canonical([tool_name, arguments]).encode()).hexdigest()[:32]


def content_hash(outcome: ToolCallOutcome) -> str:
    return hashlib.sha256(_canonical([outcome.content, outcome.structured_content]).encode()).hexdigest()


class IngestedResult(BaseModel):
    id: int
    source_id: str
    tool_name: str
    arguments: dict[str, Any]
    content_hash: str
    content: dict[str, Any]
    fetched_at: str


class Ingestor:
    """Runs pulls for the registry's sources through a `Gateway`."""

    def __init__(self, registry: Registry, gateway: Gateway) -> None:
        self.registry = registry
        self.gateway = gateway
        self._rows = IngestRows(registry.store)

    async def pull(self, source_id: str, *, sandbox: str | None = None) -> PullResult:
        source = self.registry.get_source(source_id, sandbox=sandbox)
        if source.status != SourceStatus.ACTIVE:
            raise SourceInactive(f"source {source.name} ({source.id}) is {source.status.value}; "
                           "only an active source can be pulled")
        calls = source.ingest_tool_calls
        if not calls:
            raise NothingToPull(f"source {source.name} ({source.id}) has no ingest_tool_calls "
                           "(ingestion_mode live_tools_only); add some with "
                           f"`concierge source user-mcp update {source.id} --ingest JSON`")
        result = PullResult(source_id=source.id, calls=0, stored=0, unchanged=0)
        for index, call in enumerate(calls):
            try:
                outcome = await self.gateway.call_source(source.id, call.name, call.arguments,
                                                         enforce_allowlist=False)
            except (RateLimited, ConnectorError) as exc:
                result.calls += 1
                result.skipped = len(calls) - index - 1
                result.errors.append(f"{call.name}: {exc.detail}" +
                                     (f" (stopped; {result.skipped} calls not run)" if result.skipped else ""))
                break
            result.calls += 1
            if outcome.is_error:
                result.errors.append(f"{call.name}: the tool returned an error: {outcome.text[:300]}")
                continue
            if self._store(source.id, call.name, call.arguments, outcome):
                result.stored += 1
            else:
                result.unchanged += 1
        return result

    def _store(self, source_id: str, tool_name: str, arguments: dict[str, Any],
               outcome: ToolCallOutcome) -> bool:
        """Insert the result unless the last one stored for this call has the same hash."""
        return self._rows.store_if_changed(
            source_id, tool_name, arguments, call_key=call_key(tool_name, arguments),
            content_hash=content_hash(outcome),
            content={"content": outcome.content, "structured_content": outcome.structured_content,
                     "text": outcome.text})

    def results(self, source_id: str, *, limit: int = 100) -> list[IngestedResult]:
        """Stored results of a source, newest first."""
        rows = self._rows.newest(source_id, limit=max(1, min(int(limit), 10_000)))
        return [IngestedResult(**r) for r in rows]
