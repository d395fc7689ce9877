"""Why talking to an MCP server failed: `ErrorKind`, importable without loading the mcp SDK.

The enum is defined beside the exception tree (`concierge.errors`, which classifies a
`ConnectorError` by it) and re-exported here, where the connector's readers look for it.
"""

from __future__ import annotations

from concierge.errors import ErrorKind

__all__ = ["ErrorKind"]
