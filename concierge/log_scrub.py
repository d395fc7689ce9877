"""Log lines never carry a URL's credentials: httpx2 logs every request's URL, and the mcp
SDK the URL it connects to, which for a source with ``?api_key=…`` holds its key.

`install` puts `UrlCredentialScrubber` on those loggers (a filter on a logger sees only the
records logged there) and on every handler of the root logger (which sees what propagates).
"""

from __future__ import annotations

import logging
from typing import Final

from concierge.url_secrets import scrub

__all__ = ["UrlCredentialScrubber", "install"]

URL_LOGGERS: Final = ("httpx2", "httpx", "mcp.client.streamable_http", "mcp.client.sse", "mcp.client.auth.oauth2",
                      "concierge")


class UrlCredentialScrubber(logging.Filter):
    """Rewrites a record whose message holds a URL credential (the value shown as ``••••``)."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a record that cannot be formatted is the handler's to report
            return True
        scrubbed = scrub(message)
        if scrubbed != message:
            record.msg, record.args = scrubbed, None
        return True


_SCRUBBER: Final = UrlCredentialScrubber()


def install() -> None:
    """Scrub the loggers that write URLs, and every root handler (idempotent)."""
    for name in URL_LOGGERS:
        logger = logging.getLogger(name)
        if _SCRUBBER not in logger.filters:
            logger.addFilter(_SCRUBBER)
    for handler in logging.getLogger().handlers:
        if _SCRUBBER not in handler.filters:
            handler.addFilter(_SCRUBBER)
