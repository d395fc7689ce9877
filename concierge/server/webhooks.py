"""Webhook routes: the signed receiver (no API key), secret rotation and the stored events.

The receiver is ``POST /api/v1/webhooks/user-mcp/{source_id}``; senders sign each delivery
with the secret returned once at registration (see `concierge.registry.webhooks` for the
headers and the order of checks). Answers: 200 ``stored`` or ``duplicate`` (a replayed event
id is acknowledged, not stored twice), 401 bad signature, 404 unknown or revoked source,
409 paused, 413 too large, 429 over ``webhook_rate_cap_per_minute`` (with Retry-After).
"""

from __future__ import annotations

from starlette.concurrency import run_in_threadpool

from concierge.registry.webhooks import (
    EVENT_ID_HEADER,
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    WebhookEvent,
    WebhookReceipt,
    WebhookSecret,
)
from concierge.server.api import ApiRoute, Ctx, ListOf, Query

__all__ = ["ROUTES"]

SRC = "/api/v1/storage/sandboxes/{sandbox_id}/sources/{source_id}"


async def receive(ctx: Ctx) -> WebhookReceipt:
    body = await ctx.body_bytes()
    headers = {k: v for k, v in ctx.request.headers.items()}
    # SQLite writes and HMAC are quick but blocking: keep the event loop free under a firehose.
    return await run_in_threadpool(ctx.services.webhooks.receive, ctx.param("source_id"), body=body,
                                   headers=headers, content_type=ctx.request.headers.get("content-type"))


async def rotate(ctx: Ctx) -> WebhookSecret:
    return ctx.services.webhooks.rotate(ctx.param("source_id"), sandbox=ctx.sandbox_ref())


async def events(ctx: Ctx) -> list[WebhookEvent]:
    limit = ctx.int_query("limit", 50, lo=1, hi=1000)
    return ctx.services.webhooks.events(ctx.param("source_id"), sandbox=ctx.sandbox_ref(), limit=limit)


ROUTES = [
    ApiRoute("POST", "/api/v1/webhooks/user-mcp/{source_id}", receive,
             "Receive a webhook event for a source (signed; no API key)", "signature", "webhooks",
             response=WebhookReceipt, errors=(400, 401, 404, 409, 413, 429),
             body=None,
             description=f"Headers: `{TIMESTAMP_HEADER}` (Unix seconds), `{EVENT_ID_HEADER}` (or an "
                         f"`id` in a JSON body), `{SIGNATURE_HEADER}: sha256=<hex>` = HMAC-SHA256 with "
                         "the source's webhook secret over `<timestamp>.<raw body>`."),
    ApiRoute("POST", SRC + "/user-mcp/webhook-secret", rotate,
             "Rotate the source's webhook signing secret (the new one is shown once)", "editor",
             "webhooks", response=WebhookSecret, errors=(409,)),
    ApiRoute("GET", SRC + "/webhook-events", events, "The source's stored webhook events, newest first",
             "viewer", "webhooks", response=ListOf(WebhookEvent),
             query=(Query("limit", "How many (1-1000, default 50).",
                          {"type": "integer", "minimum": 1, "maximum": 1000, "default": 50}),)),
]
