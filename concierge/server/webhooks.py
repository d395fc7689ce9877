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
    MAX_BODY_BYTES,
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    WebhookEvent,
    WebhookReceipt,
    WebhookSecret,
)
from concierge.registry.pages import Page
from concierge.server.api import ApiRoute, Ctx, PageOf, page_query

__all__ = ["ROUTES"]

SRC = "/api/v1/storage/sandboxes/{sandbox_id}/sources/{source_id}"


async def receive(ctx: Ctx) -> WebhookReceipt:
    headers = {k: v for k, v in ctx.request.headers.items()}
    hooks = ctx.services.webhooks
    # SQLite reads/writes and HMAC are quick but blocking: keep the event loop free under a firehose.
    # The source and the signature headers are checked first: nothing unsigned is read.
    admission = await run_in_threadpool(hooks.admit, ctx.param("source_id"), headers)
    body = await ctx.body_bytes(limit=MAX_BODY_BYTES)
    return await run_in_threadpool(hooks.accept, admission, body,
                                   content_type=ctx.request.headers.get("content-type"))


async def rotate(ctx: Ctx) -> WebhookSecret:
    return ctx.services.webhooks.rotate(ctx.param("source_id"), sandbox=ctx.sandbox_ref())


_EVENTS_PAGE = 50


async def events(ctx: Ctx) -> Page[WebhookEvent]:
    return await run_in_threadpool(ctx.services.webhooks.page_events, ctx.param("source_id"),
                                   sandbox=ctx.sandbox_ref(), **ctx.page_args(_EVENTS_PAGE))


ROUTES = [
    ApiRoute("POST", "/api/v1/webhooks/user-mcp/{source_id}", receive,
             "Receive a webhook event for a source (signed; no API key)", "signature", "webhooks",
             response=WebhookReceipt, errors=(400, 401, 404, 409, 413, 429),
             body=None,
             description=f"Headers: `{TIMESTAMP_HEADER}` (Unix seconds), `{EVENT_ID_HEADER}` (or an "
                         f"`id` in a JSON body), `{SIGNATURE_HEADER}: sha256=<hex>` = HMAC-SHA256 with "
                         "the source's webhook secret over `<timestamp>.<event_id>.<raw body>` (the "
                         f"`{EVENT_ID_HEADER}` value, empty when the id is in the body), so a delivery "
                         "replayed under another event id does not verify. The source and these headers "
                         f"are checked before the body is read; a body over {MAX_BODY_BYTES} bytes is "
                         "refused with 413 (a larger `Content-Length` before a byte is read)."),
    ApiRoute("POST", SRC + "/user-mcp/webhook-secret", rotate,
             "Rotate the source's webhook signing secret (the new one is shown once)", "editor",
             "webhooks", response=WebhookSecret, errors=(409,)),
    ApiRoute("GET", SRC + "/webhook-events", events, "The source's stored webhook events, newest first",
             "viewer", "webhooks", response=PageOf(WebhookEvent, _EVENTS_PAGE), query=page_query(_EVENTS_PAGE)),
]
