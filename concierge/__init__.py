"""Concierge: a conversational registry for the MCP servers your agents use."""

__version__ = "0.1.0"
