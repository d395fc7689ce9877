"""The embeddable chat widget (``/widget.js``, no build step) and a demo page at ``/`` that embeds it."""

from __future__ import annotations

import html
from functools import cache
from importlib import resources

from starlette.responses import HTMLResponse, Response

from concierge.server.api import ApiRoute, Ctx

__all__ = ["ROUTES", "demo_page"]


@cache
def _static(name: str) -> str:
    return resources.files("concierge.server").joinpath("static", name).read_text(encoding="utf-8")


def demo_page(sandbox: str = "default", title: str = "Concierge") -> str:
    """A page with one script tag: everything else comes from widget.js."""
    sb = html.escape(sandbox, quote=True)
    return f"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<link rel="icon" href="data:,">
<title>{html.escape(title)}</title>
<style>
  body {{ font: 16px/1.5 system-ui, sans-serif; margin: 0; color: #1f2328; background: #f6f8fa; }}
  main {{ max-width: 44rem; margin: 3rem auto; padding: 0 1.5rem; }}
  code {{ background: #eaeef2; padding: .1em .3em; border-radius: 4px; }}
  pre {{ white-space: pre-wrap; overflow-wrap: anywhere; }}  /* no sideways scroll on a phone */
  @media (max-width: 480px) {{ main {{ margin: 1.5rem auto 6rem; padding: 0 1rem; }} }}
</style>
</head>
<body>
<main>
  <h1>{html.escape(title)}</h1>
  <p>Connect your own MCP servers to your agents by talking to the concierge: open the chat
  with the button in the corner and try <em>“Add my MCP server at https://mcp.example.com/mcp
  with a bearer token”</em> or <em>“List my sources”</em>.</p>
  <p>Embed it on any page with one tag:</p>
  <pre><code>&lt;script src="/widget.js" data-sandbox="{sb}"&gt;&lt;/script&gt;</code></pre>
</main>
<script src="/widget.js" data-sandbox="{sb}" data-title="{html.escape(title, quote=True)}"></script>
</body>
</html>
"""


async def demo(ctx: Ctx) -> HTMLResponse:
    sandbox = ctx.query("sandbox") or "default"
    return HTMLResponse(demo_page(sandbox))


async def widget_js(ctx: Ctx) -> Response:
    return Response(_static("widget.js"), media_type="application/javascript",
                    headers={"Cache-Control": "no-cache"})


ROUTES = [
    ApiRoute("GET", "/", demo, "A demo page embedding the chat widget", "public", "widget",
             response={"type": "string"}, media="text/html"),
    ApiRoute("GET", "/widget.js", widget_js, "The embeddable chat widget (plain JavaScript)", "public",
             "widget", response={"type": "string"}, media="application/javascript"),
]
