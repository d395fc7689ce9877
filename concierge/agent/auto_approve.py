"""What ``concierge ask --yes`` may approve without asking — and what it must hold.

``--yes`` stands for the person's yes to the change *their request asked for*. A write is
carried out at once only when both hold:

1. **the request asked for that kind of change**: the request's words name it (`WRITE_WORDS`:
   "revoke", "remove", "disconnect" … for ``revoke_source``). A model that answers "test my
   source" with an update gets a question, not a change.
2. **the model had not read text a server wrote** before choosing it (tool descriptions,
   server names, health errors quoting the server: `concierge.agent.untrusted`). Such text may
   carry an injected instruction, so a write chosen after it always asks. A model that follows
   no instructions in what it reads (the offline planner: its writes come from the person's own
   words, matched against a table) is exempt from this rule, never from the first.

Otherwise the write is parked like any other (``ask`` stops with "needs confirmation", exit 3)
and `hold_reason` says why. The table errs towards asking: a phrasing it does not know costs
a confirmation, never a change nobody asked for.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

from concierge.agent.untrusted import history_has_server_text

__all__ = ["WRITE_WORDS", "asked_for", "hold_reason"]


def _words(*phrases: str) -> re.Pattern[str]:
    return re.compile(r"(?i)\b(?:" + "|".join(phrases) + r")\b")


WRITE_WORDS: dict[str, re.Pattern[str]] = {
    "register_source": _words(r"add(?:ing)?", r"register\w*", r"connect(?:ing)?", r"hook(?:ing)?\s+up",
                              r"plug(?:ging)?\s+in", r"set(?:ting)?\s+up", r"onboard\w*", r"new"),
    "update_source": _words(r"update\w*", r"chang\w*", r"renam\w*", r"rotat\w*", r"set", r"switch\w*",
                            r"mov\w*", r"edit\w*", r"modif\w*", r"limit\w*", r"restrict\w*", r"allow\w*",
                            r"use", r"point\w*", r"call\s+it", r"make"),
    "pause_source": _words(r"paus\w*", r"disabl\w*", r"suspend\w*", r"take\s+\w+\s+offline", r"offline",
                           r"turn\s+off", r"stop\w*"),
    "resume_source": _words(r"resum\w*", r"unpaus\w*", r"re-?enabl\w*", r"enabl\w*", r"turn\s+(?:back\s+)?on",
                            r"reactivat\w*", r"back\s+on"),
    "revoke_source": _words(r"revok\w*", r"disconnect\w*", r"remov\w*", r"get\s+rid\s+of", r"deactivat\w*"),
    "create_agent": _words(r"creat\w*", r"add\w*", r"make", r"new", r"set\s+up"),
    "update_agent": _words(r"updat\w*", r"chang\w*", r"renam\w*", r"allow\w*", r"restrict\w*", r"limit\w*",
                           r"give", r"let", r"set", r"add", r"remov\w*", r"only"),
    "create_sandbox": _words(r"creat\w*", r"add\w*", r"make", r"new", r"set\s+up"),
    "accept_tool_changes": _words(r"approv\w*", r"accept\w*", r"trust\w*", r"re-?pin\w*"),
}
"""The words by which a request asks for each kind of write."""

_AGENT_STATUS_WORDS: dict[str, re.Pattern[str]] = {
    "paused": _words(r"paus\w*", r"suspend\w*", r"disabl\w*", r"stop\w*", r"turn\s+off", r"freez\w*"),
    "active": _words(r"resum\w*", r"unpaus\w*", r"re-?enabl\w*", r"enabl\w*", r"turn\s+(?:back\s+)?on",
                     r"reactivat\w*", r"back\s+on", r"unfreez\w*"),
}
"""The words by which a request asks to pause an agent (``update_agent`` with ``status: paused``)
or resume one: a pause asked for covers only the status, never an allowlist chosen with it."""

_WHAT = {
    "register_source": "register a source", "update_source": "change a source", "pause_source": "pause a source",
    "resume_source": "resume a source", "revoke_source": "revoke a source", "create_agent": "create an agent",
    "update_agent": "change an agent", "create_sandbox": "create a sandbox",
    "accept_tool_changes": "approve changed tools",
}


def asked_for(tool: str, request: str, arguments: Mapping[str, Any] | None = None) -> bool:
    """Does ``request`` (the person's message) ask for a write of ``tool``'s kind (for an
    agent's status, of that status; for anything else about an agent, of that)?"""
    arguments = arguments or {}
    if tool == "update_agent" and arguments.get("status") in _AGENT_STATUS_WORDS:
        if not _AGENT_STATUS_WORDS[arguments["status"]].search(request):
            return False
        if not any(arguments.get(k) for k in ("name", "tool_allowlist", "allow_all_tools")):
            return True
    pattern = WRITE_WORDS.get(tool)
    return bool(pattern is not None and pattern.search(request))


def hold_reason(tool: str, request: str, history: Sequence[Mapping[str, Any]],
                arguments: Mapping[str, Any] | None = None, *, follows_read_text: bool = True) -> str | None:
    """Why ``--yes`` does not cover this write, or None when it may run at once.
    ``follows_read_text``: False for a model that cannot be instructed by what it reads."""
    if follows_read_text and history_has_server_text(history):
        return ("it was chosen after reading text that an MCP server wrote (tool descriptions, server "
                "names or errors), which may carry instructions; --yes never approves such a change")
    if not asked_for(tool, request, arguments):
        return (f"the request did not ask to {_WHAT.get(tool, tool)} ({tool}); --yes approves only the "
                "kind of change the request asked for")
    command = (arguments or {}).get("command")
    if tool == "register_source" and command and " ".join(str(command).split()) not in " ".join(request.split()):
        # a stdio source runs a program on this machine: only the one the request spelled out
        return (f"the program to run (`{command}`) is not the one the request spelled out; --yes runs "
                "only a command written in the request itself")
    return None
