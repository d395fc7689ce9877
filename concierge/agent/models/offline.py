"""`OfflinePlanner`: a deterministic, rule-based `ChatModel` — the default with no model configured.

It understands a fixed set of requests (register with slot filling, test, update the common
fields, pause/resume, revoke with disambiguation, list sources/sandboxes/agents, an agent's
tools, help) and works through the very same tools, gate and events as a real model: it only
ever answers with text or one tool call, and the engine runs (or gates) that call.

It keeps no state of its own. Each reply is computed from the messages it is given: the
conversation is folded, message by message, into a `_State` (the current flow and the slots
it has filled), and the next step follows from that. A session restored from its saved
state therefore continues exactly where it stopped.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from concierge.agent.models.base import ModelResponse, TextSink, ToolCall, Usage
from concierge.registry import validation as rules

__all__ = ["OFFLINE_MODEL_NAME", "OfflinePlanner"]

OFFLINE_MODEL_NAME = "offline-planner"

CONFIGURE = ("To talk freely, configure a model: set OPENAI_API_KEY (plus OPENAI_BASE_URL for "
             "another OpenAI-compatible server, and CONCIERGE_MODEL to pick the model).")

HELP = """I can help you connect your own MCP servers to your agents. Try:
- "Add my MCP server at https://mcp.example.com/mcp with a bearer token"
- "Test the health of my custom MCP source"
- "Rename acme to Acme prod and set its rate cap to 30"
- "Rotate the token for acme"
- "Revoke my custom MCP source"
- "List my sources"
- "What tools does my support agent have right now?"
I'm the offline planner, so I only understand requests like these. """ + CONFIGURE

UNKNOWN = ("Sorry, I didn't understand that. I can register, test, update, pause, resume or "
           "revoke your MCP sources, list them, and show an agent's tools — say \"help\" for "
           "examples. " + CONFIGURE)

_URL_RE = re.compile(r"\b(?:https?://[^\s<>\"'`]+|(?:localhost|127\.0\.0\.1):\d+[^\s<>\"'`]*)", re.I)
_REF_RE = re.compile(r"\[secret:(sec_[0-9a-f]{8,32})\]")
_HEADER_RE = re.compile(r"\b([A-Za-z][A-Za-z0-9]*(?:-[A-Za-z0-9]+)+)\b")
_ID_RE = re.compile(r"\bds_[0-9A-Za-z]{6,40}\b")
_ORDINALS = {"first": 1, "1st": 1, "one": 1, "second": 2, "2nd": 2, "two": 2, "third": 3,
             "3rd": 3, "three": 3, "fourth": 4, "4th": 4, "four": 4, "fifth": 5, "five": 5,
             "last": -1}
_CANCEL = re.compile(r"^\s*(cancel|never ?mind|forget (it|that)|stop|abort|quit that|no thanks)\b", re.I)
_YES = re.compile(r"^\s*(y|yes|yep|yeah|sure|ok|okay|go ahead|do it|please do|confirm(ed)?)\s*[.!]*\s*$", re.I)
_NO = re.compile(r"^\s*(n|no|nope|don'?t|do not)\s*[.!]*\s*$", re.I)
_STOP_WORDS = frozenset(
    "the a an my our your their this that it its of for to at in on with and or please can you "
    "could would will me i is are be source sources server servers mcp custom health check test "
    "revoke pause resume rename set rate cap token new rotate one which what how do does have "
    "has right now agent agents tool tools update change disconnect remove delete show tell "
    "about status state".split())


_NOT_AGENT_NAMES = frozenset("an every each see use using got get currently called named".split())

# --------------------------------------------------------------------------------------------
# State


@dataclass
class _Flow:
    intent: str
    slots: dict[str, Any] = field(default_factory=dict)
    sources: list[dict[str, Any]] | None = None
    agents: list[dict[str, Any]] | None = None
    hint: str = ""
    """The words of the request that may name its target."""
    candidates: list[dict[str, Any]] | None = None
    target: dict[str, Any] | None = None
    notice: str = ""
    """Said before the next question (a rule the last answer broke)."""
    not_confirmed: bool = False


@dataclass
class _State:
    current_sandbox: str = "default"
    sandboxes: list[str] = field(default_factory=list)
    flow: _Flow | None = None
    reply: str | None = None
    """A final answer owed for the latest tool result."""
    last_user: str = ""
    tool_calls_seen: int = 0


def _parse_context(system: str, state: _State) -> None:
    current = re.search(r"^Current sandbox: (.+)$", system, re.M)
    listed = re.search(r"^Sandboxes: (.+)$", system, re.M)
    if current:
        state.current_sandbox = current.group(1).strip()
    if listed:
        state.sandboxes = [s.replace("(current)", "").strip() for s in listed.group(1).split(",") if s.strip()]


# --------------------------------------------------------------------------------------------
# Reading the person


def _intent(text: str) -> str | None:
    has_url = bool(_URL_RE.search(text))
    t = _URL_RE.sub(" ", text).lower()  # "https://health.example.com" is not a health check
    if re.fullmatch(r"\s*(help|\?|/help|what can you do\??|how does (this|it) work\??)\s*", t):
        return "help"
    if re.search(r"\bhelp\b", t) and len(t.split()) <= 4:
        return "help"
    if re.search(r"\b(delete|permanently|purge|erase)\b", t):
        return "delete"
    if re.search(r"\b(revoke|disconnect|unregister|remove)\b", t):
        return "revoke"
    if re.search(r"\b(un-?pause|resume|re-?enable|turn (it |\w+ )?back on)\b", t):
        return "resume"
    if re.search(r"\b(pause|suspend|disable|turn (it |\w+ )?off)\b", t):
        return "pause"
    if re.search(r"\b(rotate|rename|rate ?cap|rate ?limit|new token|change|update|replace|"
                 r"calls? (per|a|/) ?min)", t):
        return "update"
    # Catalog questions come after the change verbs: a source may be called "Demo tools".
    if re.search(r"\btools?\b", t) and not has_url and not re.search(
            r"\b(add|register|connect|allow|only)\b", t):
        return "tools"
    if re.search(r"\b(test|check|health|healthy|ping|working|reachable)\b", t) and not re.search(
            r"\b(add|register)\b", t):
        return "test"
    if re.search(r"\b(add|register|connect|hook up|set up|plug in|new (mcp )?(server|source))\b", t) \
            or has_url:
        return "register"
    if re.search(r"\bsandbox(es)?\b", t):
        return "sandboxes"
    if re.search(r"\bagents?\b", t):
        return "agents"
    if re.search(r"\b(list|show|sources?|servers?|what do i have|overview)\b", t):
        return "list"
    return None


def _url(text: str) -> str | None:
    match = _URL_RE.search(text)
    if not match:
        return None
    url = match.group(0).rstrip(".,;:!?)]}'\"")
    if not url.lower().startswith(("http://", "https://")):
        url = "http://" + url
    return url


def _check_url(url: str) -> tuple[str | None, str]:
    """(normalized url, "") or (None, a plain explanation)."""
    try:
        return rules.normalize_base_url(url), ""
    except ValueError as exc:
        host = (urlsplit(url).hostname or "") if "://" in url else ""
        if url.lower().startswith("http://") and host and host not in rules.LOCAL_HOSTS:
            return None, (f"Plain http is only allowed for a server on this machine (localhost, "
                          f"127.0.0.1 or ::1): anywhere else the token and your tool calls would "
                          f"travel unencrypted. Use the https:// address of {host} instead.")
        return None, f"That URL won't work: {str(exc).replace('base_url', 'the URL')}."


def _auth(text: str) -> tuple[str | None, str | None]:
    """(auth_kind, header name) mentioned in ``text`` (URLs and labels left out)."""
    text = _URL_RE.sub(" ", text)
    label = _label(text)
    if label:
        text = text.replace(label, " ")
    t = text.lower()
    header = None
    for match in _HEADER_RE.finditer(text):
        word = match.group(1)
        if word.lower().startswith("x-") or "key" in word.lower() or "token" in word.lower() \
                or "auth" in word.lower():
            header = word
            break
    if header and header.lower() == "authorization":
        header = None
    if re.search(r"\b(no auth|no authentication|none|no token|unauthenticated|public|open|"
                 r"without auth|no credentials?|nothing)\b", t) or re.fullmatch(r"\s*no\s*\.?\s*", t):
        return "none", None
    if re.search(r"\b(custom header|header|x-[a-z0-9-]+)\b", t) or header:
        return "header_token", header
    if re.search(r"\b(bearer|token|api key|authorization)\b", t):
        return "bearer", None
    return None, header


def _label(text: str) -> str | None:
    match = re.search(r"\b(?:call it|name it|named|called|label(?:led)?(?: it)?(?: as)?)\s+"
                      r"[\"“']?([^\"”'.,;!?]+?)[\"”']?(?=\s+(?:in|and|with|on|at)\b|[.,;!?]|$)", text, re.I)
    return match.group(1).strip() if match else None


def _sandbox_in(text: str, known: list[str]) -> str | None:
    text = _URL_RE.sub(" ", text)
    match = re.search(r"\b(?:in|into|to|use|sandbox)\s+(?:the\s+)?(?:sandbox\s+)?[\"']?([A-Za-z0-9_-]+)[\"']?"
                      r"(?:\s+sandbox)?", text, re.I)
    words = {w.lower() for w in re.findall(r"[A-Za-z0-9_-]+", text)}
    for name in known:
        if name.lower() in words and (re.search(r"\bsandbox\b", text, re.I) or match and
                                      match.group(1).lower() == name.lower()):
            return name
    return None


def _namespace_in(text: str) -> str | None:
    match = re.search(r"\bnamespace\s+(?:to\s+|is\s+|of\s+)?[\"']?([A-Za-z0-9_-]{1,64})\b", text, re.I)
    return match.group(1) if match else None


def _slug(label: str) -> str:
    slug = re.sub(r"[^a-z0-9]+", "_", label.lower()).strip("_")[:40].strip("_")
    return slug or "mcp"


def _default_label(url: str) -> str:
    host = (urlsplit(url).hostname or "server").lower()
    if host in rules.LOCAL_HOSTS:
        return "local"
    parts = [p for p in host.split(".") if p not in ("mcp", "www", "api")]
    return parts[0] if parts else host


def _refs(text: str) -> list[str]:
    return _REF_RE.findall(text)


def _update_fields(text: str) -> dict[str, Any]:
    fields: dict[str, Any] = {}
    rename = re.search(r"\brename\s+(?:(?:the|my)\s+)?(?:(?:source|server)\s+)?(?P<old>.+?)\s+to\s+[\"“']?"
                       r"(?P<new>[^\"”']+?)[\"”']?(?=\s+and\b|[,;!?]|\.\s|\.$|$)", text, re.I)
    if rename:
        fields["name"] = rename.group("new").strip()
        old = rename.group("old").strip()
        if old.lower() not in ("it", "this", "that", "this one", "that one"):
            fields["old_name"] = old
    else:
        named = re.search(r"\b(?:change the name to|call it|name it)\s+[\"“']?([^\"”'.,;!?]+?)[\"”']?"
                          r"(?=\s+and\b|[.,;!?]|$)", text, re.I)
        if named:
            fields["name"] = named.group(1).strip()
    cap = re.search(r"\b(?:rate[ -]?cap|rate[ -]?limit|limit)\b\D{0,25}?(\d{1,5})", text, re.I) or \
        re.search(r"\b(\d{1,5})\s*(?:calls?|requests?)\s*(?:per|a|/)\s*min", text, re.I)
    if cap:
        fields["rate_cap_per_minute"] = int(cap.group(1))
    if re.search(r"\b(rotate|new token|change the token|replace the token|update the token|"
                 r"new key|rotate the key|different token)\b", text, re.I):
        fields["rotate_token"] = True
    url = _url(text)
    if url and re.search(r"\b(url|address|move|point|endpoint)\b", text, re.I):
        fields["url"] = url
    return fields


def _mentioned(text: str, sources: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Sources the text names: by id, name, namespace, or a word unique to them."""
    low = text.lower()
    ids = set(_ID_RE.findall(text))
    hits = [s for s in sources if s["id"] in ids]
    if hits:
        return hits
    hits = [s for s in sources if s["name"].lower() in low or
            re.search(rf"\b{re.escape(s['namespace'].lower())}\b", low)]
    if hits:
        # "Acme staging" beats "Acme" when both names occur in the text.
        longest = max(len(s["name"]) for s in hits)
        full = [s for s in hits if s["name"].lower() in low and len(s["name"]) == longest]
        return full if len(full) == 1 else hits
    words = {w for w in re.findall(r"[a-z0-9][a-z0-9_-]{2,}", low) if w not in _STOP_WORDS}
    return [s for s in sources if words & set(re.findall(r"[a-z0-9][a-z0-9_-]{2,}", s["name"].lower()))]


def _pick(text: str, candidates: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The candidate an answer to "which one?" means, if exactly one."""
    low = text.lower().strip().rstrip(".!")
    number = re.fullmatch(r"#?(\d+)\s*[.)]?", low)
    if number:
        index = int(number.group(1))
        return candidates[index - 1] if 1 <= index <= len(candidates) else None
    hits = _mentioned(text, candidates)
    if len(hits) == 1:
        return hits[0]
    if hits:
        return None
    # "the second one", "first", "last" (a bare "one" counts only on its own).
    words = re.findall(r"[a-z0-9]+", low)
    for word, index in _ORDINALS.items():
        if word in words and (word != "one" or words == ["one"]) and len(words) <= 4:
            if index == -1:
                return candidates[-1]
            return candidates[index - 1] if index <= len(candidates) else None
    return None


def _plain_error(text: str | None) -> str:
    """A connector error for people: its cause only (no ``kind:`` prefix, no advice), one stop."""
    text = re.sub(r"^[a-z_]+: ", "", (text or "the health check failed").strip())
    text = text.split(" — ")[0].rstrip(" .")
    return text + "."


def _sentence(text: str) -> str:
    text = text.strip()
    text = text[:1].upper() + text[1:]
    return text if text.endswith((".", "?", "!")) else text + "."


# --------------------------------------------------------------------------------------------
# The planner


_ELIGIBLE = {
    "test": lambda s: s["status"] != "disconnected",
    "revoke": lambda s: s["status"] != "disconnected",
    "update": lambda s: s["status"] != "disconnected",
    "pause": lambda s: s["status"] in ("active", "error"),
    "resume": lambda s: s["status"] == "paused",
    "delete": lambda s: True,
}
_SOURCE_TOOL = {"test": "test_source", "revoke": "revoke_source", "pause": "pause_source",
                "resume": "resume_source", "delete": "delete_source_command", "update": "update_source"}


class OfflinePlanner:
    """Rule-based planner; see the module docstring. Implements `ChatModel`."""

    name = OFFLINE_MODEL_NAME

    async def respond(self, messages: Sequence[dict[str, Any]], tools: Sequence[dict[str, Any]], *,
                      on_text: TextSink | None = None) -> ModelResponse:
        state = self._fold(messages)
        available = {t.get("function", {}).get("name") for t in tools}
        step = self._decide(state)
        if isinstance(step, tuple):
            name, arguments = step
            if name not in available:
                step = f"I can't do that here: the {name} tool is not available."
            else:
                call = ToolCall(id=f"call_{state.tool_calls_seen + 1}", name=name, arguments=arguments,
                                raw_arguments=json.dumps(arguments))
                return ModelResponse(tool_calls=(call,), finish_reason="tool_calls", usage=Usage())
        if on_text is not None:
            await on_text(step)
        return ModelResponse(text=step, finish_reason="stop", usage=Usage())

    # -- folding the conversation -------------------------------------------------------------

    def _fold(self, messages: Sequence[dict[str, Any]]) -> _State:
        state = _State()
        calls: dict[str, tuple[str, dict[str, Any]]] = {}
        for message in messages:
            role = message.get("role")
            if role == "system":
                _parse_context(str(message.get("content") or ""), state)
            elif role == "user":
                self._on_user(state, str(message.get("content") or ""))
            elif role == "assistant":
                for call in message.get("tool_calls") or []:
                    state.tool_calls_seen += 1
                    fn = call.get("function", {})
                    try:
                        args = json.loads(fn.get("arguments") or "{}")
                    except json.JSONDecodeError:
                        args = {}
                    calls[call.get("id", "")] = (fn.get("name", ""), args)
            elif role == "tool":
                name, args = calls.get(message.get("tool_call_id", ""), ("", {}))
                try:
                    result = json.loads(message.get("content") or "null")
                except json.JSONDecodeError:
                    result = {"error": "unreadable", "detail": str(message.get("content"))[:200]}
                self._on_result(state, name, args, result)
        return state

    def _on_user(self, state: _State, text: str) -> None:
        if state.flow is not None and state.reply is None:
            # Replay the reply this message answers: it may have set candidates to pick from.
            self._decide(state)
        state.reply = None
        state.last_user = text
        flow = state.flow
        if flow is not None:
            flow.notice = ""
        if _CANCEL.search(text) or (flow is not None and flow.not_confirmed and _NO.match(text)):
            state.flow = None
            state.reply = "OK, I've stopped. Nothing was changed."
            return
        if flow is not None and flow.not_confirmed and _YES.match(text):
            flow.not_confirmed = False  # ask the engine's confirmation again
            return
        intent = _intent(text)
        if flow is not None and self._answer(state, flow, text, intent):
            return
        if intent is None:
            state.flow = None
            state.reply = UNKNOWN
            return
        state.flow = _Flow(intent)
        if intent == "register":
            self._fill_register(state, state.flow, text)
        elif intent in _SOURCE_TOOL:
            state.flow.hint = text
            if intent == "update":
                state.flow.slots.update(_update_fields(text))
                state.flow.slots["refs"] = _refs(text)
        elif intent == "tools":
            state.flow.hint = text

    def _answer(self, state: _State, flow: _Flow, text: str, intent: str | None) -> bool:
        """Treat ``text`` as the answer to the flow's open question, if it is one."""
        if intent == "help":
            return False
        awaiting = self._awaiting(state, flow)
        if awaiting is None:
            return False
        if awaiting == "choice":
            assert flow.candidates is not None
            chosen = _pick(text, flow.candidates)
            if chosen is not None:
                flow.target = chosen
                return True
            if intent is not None and intent != flow.intent:
                return False
            flow.notice = "Sorry, I couldn't tell which one you mean."
            return True
        if awaiting == "agent":
            if intent is not None and intent != "tools":
                return False
            flow.hint = text
            return True
        if flow.intent == "register":
            before = dict(flow.slots)
            self._fill_register(state, flow, text, answering=awaiting)
            if flow.slots != before or flow.notice:
                return True
            if intent is not None and intent != "register":
                return False
            flow.notice = {
                "url": "I need the server's address, starting with https:// (or http://localhost "
                       "for a server on this machine).",
                "auth": "Please answer bearer, header or none.",
                "sandbox": "That isn't one of your sandboxes.",
            }.get(awaiting, "")
            return True
        return False

    def _fill_register(self, state: _State, flow: _Flow, text: str, answering: str | None = None) -> None:
        slots = flow.slots
        url = _url(text)
        if url and "url" not in slots:
            good, why = _check_url(url)
            if good:
                slots["url"] = good
            else:
                flow.notice = why
        kind, header = _auth(text)
        if answering == "auth" and kind is None and re.fullmatch(r"\s*(no|none)\s*\.?", text, re.I):
            kind = "none"
        if kind and "auth_kind" not in slots and (answering in (None, "auth") or kind != "none"):
            slots["auth_kind"] = kind
        if header and "auth_header" not in slots:
            slots["auth_header"] = header
        if answering == "auth_header" and "auth_header" not in slots:
            word = text.strip().strip("\"'`.")
            try:
                if word and rules.check_header_name(word):
                    slots["auth_header"] = word
            except ValueError as exc:
                flow.notice = f"{exc}."
        refs = _refs(text)
        if refs:
            slots["token_ref"] = refs[0]
        label = _label(text)
        if answering == "name" and not label:
            answer = text.strip().strip("\"'“”`").rstrip(".!")
            if re.fullmatch(r"(ok|okay|yes|sure|fine|default|skip|that'?s fine|sounds good)", answer, re.I):
                label = _default_label(slots.get("url", ""))
            elif answer:
                label = answer
        if label and "name" not in slots:
            slots["name"] = label[:200]
        sandbox = _sandbox_in(text, state.sandboxes)
        if answering == "sandbox" and sandbox is None:
            answer = text.strip().strip("\"'").lower()
            if answer in ("current", "this one", "ok", "default", "the current one"):
                sandbox = state.current_sandbox
            else:
                sandbox = next((s for s in state.sandboxes if s.lower() == answer), None)
                index = re.fullmatch(r"#?(\d+)", answer)
                if index and 1 <= int(index.group(1)) <= len(state.sandboxes):
                    sandbox = state.sandboxes[int(index.group(1)) - 1]
        if sandbox and "sandbox" not in slots:
            slots["sandbox"] = sandbox
        namespace = _namespace_in(text)
        if answering == "namespace" and not namespace:
            word = text.strip().strip("\"'`.")
            namespace = word if re.fullmatch(r"[A-Za-z0-9_-]{1,64}", word) else None
            if namespace is None:
                flow.notice = "A namespace is 1-64 letters, digits, _ or -."
        if namespace:
            slots["app_namespace"] = namespace
            slots.pop("namespace_taken", None)

    def _awaiting(self, state: _State, flow: _Flow) -> str | None:
        """What the flow asked the person last (the first thing still missing)."""
        if flow.intent == "register":
            slots = flow.slots
            for slot in ("url", "auth_kind"):
                if slot not in slots:
                    return "url" if slot == "url" else "auth"
            if slots["auth_kind"] == "header_token" and "auth_header" not in slots:
                return "auth_header"
            if "name" not in slots:
                return "name"
            if "sandbox" not in slots and len(state.sandboxes) > 1:
                return "sandbox"
            if slots.get("namespace_taken"):
                return "namespace"
            return None
        if flow.intent in _SOURCE_TOOL and flow.candidates and flow.target is None:
            return "choice"
        if flow.intent == "tools" and flow.agents is not None and flow.slots.get("agent_unclear"):
            return "agent"
        return None

    def _on_result(self, state: _State, name: str, args: dict[str, Any], result: Any) -> None:
        flow = state.flow
        status = result.get("status") if isinstance(result, dict) else None
        error = result.get("error") if isinstance(result, dict) else None
        if status in ("declined", "not_confirmed", "skipped", "cancelled"):
            if status == "declined":
                state.flow = None
                state.reply = _declined(name, args)
            elif status == "not_confirmed" and flow is not None:
                flow.not_confirmed = True
            return
        if name == "list_sources" and flow is not None and flow.intent in _SOURCE_TOOL and not error:
            flow.sources = result.get("sources", [])
            return
        if name == "list_agents" and flow is not None and flow.intent == "tools" and not error:
            flow.agents = result.get("agents", [])
            return
        if name == "register_source" and flow is not None and error:
            if error == "namespace_taken":
                flow.slots["namespace_taken"] = True
                flow.slots.pop("app_namespace", None)
                flow.notice = _sentence(result.get("detail", ""))
                return
            if "url" in str(result.get("detail", "")).lower():
                flow.slots.pop("url", None)
                flow.notice = f"That didn't work: {_sentence(result.get('detail', ''))}"
                return
        state.flow = None
        state.reply = _reply_for(name, args, result)
        if name == "list_agent_tools" and flow is not None and flow.agents == [] and not error:
            # Asked about an agent in a sandbox that has none: show what an agent would get.
            state.reply = (f'There are no agents in sandbox "{state.current_sandbox}" yet; one you '
                           "create (`concierge agent create SLUG`) would see what this sandbox "
                           "offers.\n" + state.reply)

    # -- deciding the next step ---------------------------------------------------------------

    def _decide(self, state: _State) -> str | tuple[str, dict[str, Any]]:
        if state.reply is not None:
            return state.reply
        flow = state.flow
        if flow is None:
            return UNKNOWN
        intent = flow.intent
        if intent == "help":
            return HELP
        if intent == "list":
            return ("list_sources", {})
        if intent == "sandboxes":
            return ("list_sandboxes", {})
        if intent == "agents":
            return ("list_agents", {})
        if intent == "register":
            return self._register_step(state, flow)
        if intent == "tools":
            return self._tools_step(state, flow)
        return self._source_step(state, flow)

    def _register_step(self, state: _State, flow: _Flow) -> str | tuple[str, dict[str, Any]]:
        slots = flow.slots
        prefix = f"{flow.notice} " if flow.notice else ""
        awaiting = self._awaiting(state, flow)
        if awaiting == "url":
            if flow.notice:
                return prefix + "What's the server's https:// URL?"
            return "What's the URL of your MCP server? (for example https://mcp.example.com/mcp)"
        if awaiting == "auth":
            return prefix + ("How does it authenticate: with a bearer token, a token in a custom "
                             "header, or none?")
        if awaiting == "auth_header":
            return prefix + "Which header carries the token? (for example X-Api-Key)"
        if awaiting == "name":
            default = _default_label(slots["url"])
            return prefix + f'What should I call it? Give a short label, or say "ok" for "{default}".'
        if awaiting == "sandbox":
            listed = ", ".join(state.sandboxes)
            return prefix + (f"Which sandbox should it go in? You have: {listed} "
                             f"(current: {state.current_sandbox}).")
        if awaiting == "namespace":
            return prefix + "What namespace should it use instead? (letters, digits, _ or -)"
        if flow.not_confirmed:
            return ('Nothing was changed. Say "yes" if you still want me to register it, or tell '
                    "me what to change.")
        arguments: dict[str, Any] = {"name": slots["name"], "url": slots["url"],
                                     "auth_kind": slots["auth_kind"]}
        if slots["auth_kind"] == "header_token":
            arguments["auth_header"] = slots["auth_header"]
        if slots["auth_kind"] != "none" and slots.get("token_ref"):
            arguments["token_ref"] = slots["token_ref"]
        if slots.get("sandbox") and slots["sandbox"] != state.current_sandbox:
            arguments["sandbox"] = slots["sandbox"]
        arguments["app_namespace"] = slots.get("app_namespace") or _slug(slots["name"])
        return ("register_source", arguments)

    def _source_step(self, state: _State, flow: _Flow) -> str | tuple[str, dict[str, Any]]:
        intent = flow.intent
        if flow.not_confirmed:
            return ('Nothing was changed. Say "yes" if you still want me to go ahead, or tell me '
                    "what to do instead.")
        if intent == "update" and not any(k in flow.slots for k in
                                          ("name", "rate_cap_per_minute", "rotate_token", "url")):
            if not flow.slots.get("refs"):
                flow_hint = ("I can rename a source, change its URL, set its rate cap or rotate its "
                             'token — for example "rename acme to Acme prod" or "rotate the token '
                             'for acme". What would you like to change?')
                return flow_hint
            flow.slots["rotate_token"] = True
        if flow.sources is None:
            return ("list_sources", {})
        if flow.target is None:
            eligible = [s for s in flow.sources if _ELIGIBLE[intent](s)]
            if not eligible:
                return _none_eligible(intent, flow.sources)
            hint = flow.slots.get("old_name") or flow.hint
            named = _mentioned(hint, eligible)
            if not named and _mentioned(hint, flow.sources):
                other = _mentioned(hint, flow.sources)[0]
                return f'"{other["name"]}" is {_status_words(other["status"])}, so I can\'t {intent} it.'
            if flow.candidates is None:
                pool = named or eligible
                if len(pool) == 1:
                    flow.target = pool[0]
                else:
                    flow.candidates = pool
            if flow.target is None:
                assert flow.candidates is not None
                lines = "\n".join(f"{i}. {s['name']} ({s['id']}, {_status_words(s['status'])}, {s['url']})"
                                  for i, s in enumerate(flow.candidates, 1))
                prefix = f"{flow.notice} " if flow.notice else ""
                return f"{prefix}Which one do you mean?\n{lines}"
        target = flow.target
        assert target is not None
        ref = target["name"] if sum(s["name"].lower() == target["name"].lower()
                                    for s in flow.sources) == 1 else target["id"]
        if intent == "update":
            arguments: dict[str, Any] = {"source": ref}
            for key in ("name", "rate_cap_per_minute", "rotate_token", "url"):
                if key in flow.slots:
                    arguments[key] = flow.slots[key]
            refs = flow.slots.get("refs") or []
            if refs and arguments.get("rotate_token"):
                arguments["token_ref"] = refs[0]
            return ("update_source", arguments)
        return (_SOURCE_TOOL[intent], {"source": ref})

    def _tools_step(self, state: _State, flow: _Flow) -> str | tuple[str, dict[str, Any]]:
        text = flow.hint
        match = re.search(r"\b(?:my|the|our)\s+([\w-]+(?:\s+[\w-]+)?)\s+(?:agent|bot)\b", text, re.I) or \
            re.search(r"\b(?:agent|bot)\s+[\"']?([\w-]+)", text, re.I) or \
            re.search(r"\b([\w-]+)\s+(?:agent|bot)\b", text, re.I)
        hint = match.group(1).lower() if match else ""
        hint = " ".join(w for w in hint.split() if w not in _STOP_WORDS and w not in _NOT_AGENT_NAMES)
        wants_agent = bool(re.search(r"\b(agent|bot)\b", text, re.I)) or bool(hint)
        if flow.agents is None:
            if not wants_agent and not re.search(r"\btools?\b", text, re.I):
                return ("list_agents", {})
            if not wants_agent:
                return ("list_agent_tools", {})
            return ("list_agents", {})
        agents = flow.agents
        if not agents:
            return ("list_agent_tools", {})
        words = [w for w in re.split(r"[\s_-]+", hint) if w]
        exact = [a for a in agents if hint and (a["slug"].lower() == hint or a["name"].lower() == hint)]
        loose = exact or [a for a in agents if words and all(
            w in a["slug"].lower() or w in a["name"].lower() for w in words)]
        if not loose and not hint:
            loose = [_pick(text, [{"id": a["slug"], "name": a["name"], "namespace": a["slug"]}
                                  for a in agents]) or {}]
            loose = [a for a in agents if loose[0] and a["slug"] == loose[0].get("id")]
        if len(loose) == 1:
            return ("list_agent_tools", {"agent": loose[0]["slug"]})
        if not loose and len(agents) == 1 and not hint:
            return ("list_agent_tools", {"agent": agents[0]["slug"]})
        flow.slots["agent_unclear"] = True
        listed = ", ".join(a["slug"] for a in agents)
        if hint and not loose:
            return f'I couldn\'t find an agent called "{hint}". Your agents: {listed}. Which one?'
        return f"Which agent? You have: {listed}."


# --------------------------------------------------------------------------------------------
# Replies


def _status_words(status: str) -> str:
    return {"disconnected": "revoked", "error": "failing its health check"}.get(status, status)


def _none_eligible(intent: str, sources: list[dict[str, Any]]) -> str:
    if not sources:
        return ('You have no MCP sources yet. Say "add my MCP server at <URL>" to register one.')
    if intent == "resume":
        return "None of your sources is paused."
    if intent == "pause":
        return "None of your sources is active, so there is nothing to pause."
    return "All of your sources are revoked; there is nothing left to change."


def _declined(name: str, args: dict[str, Any]) -> str:
    what = args.get("name") or args.get("source") or "it"
    if name == "register_source":
        return f'OK — I didn\'t register "{what}". Nothing was changed.'
    if name == "revoke_source":
        return f'OK — "{what}" stays connected. Nothing was changed.'
    return "OK — nothing was changed."


def _healthy(result: dict[str, Any]) -> str:
    """ "healthy: 4 tools in 12 ms" -> "4 tools answered in 12 ms"."""
    detail = str(result.get("detail", "")).removeprefix("healthy: ")
    return detail.replace(" in ", " answered in ", 1)


def _tools_count(n: Any) -> str:
    return "1 tool" if n == 1 else f"{n} tools"


def _reply_for(name: str, args: dict[str, Any], result: Any) -> str:
    if not isinstance(result, dict):
        return "Done."
    if result.get("error"):
        return f"That didn't work: {result.get('detail') or result['error']}."
    label = result.get("name") or args.get("name") or args.get("source", "")
    status = result.get("status")
    cause = f'{_plain_error(result.get("health_error"))} {result.get("hint", "")}'.strip()
    failed = (f" failed its health check: {cause} The source is kept (status error); once it's "
              f'fixed, say "test {label}".')
    if name == "register_source":
        if status == "active":
            ns = result.get("namespace")
            return (f'Done — "{label}" is registered in sandbox "{result.get("sandbox")}" and healthy, '
                    f'with {_tools_count(result.get("tool_count"))} (their names start with {ns}). '
                    "Agents in this sandbox can use them now.")
        return f'I registered "{label}", but it' + failed
    if name == "test_source":
        if status == "active":
            return f'"{label}" is healthy: {_healthy(result)}.'
        if status == "paused":
            return f'"{label}" is paused; its check result: {result.get("detail")}.'
        return f'"{label}" is failing its health check: {cause} Once it\'s fixed, say "test {label}" again.'
    if name == "update_source":
        changes = []
        if args.get("name"):
            changes.append(f'renamed to "{args["name"]}"')
        if args.get("rate_cap_per_minute"):
            changes.append(f'rate cap set to {args["rate_cap_per_minute"]} calls per minute')
        if args.get("rotate_token") or args.get("token_ref"):
            changes.append("new token stored")
        if args.get("url"):
            changes.append(f'URL changed to {result.get("url", args["url"])}')
        done = "; ".join(changes) or "updated"
        before = args.get("source") if args.get("name") else label
        if status == "error":
            return f'Updated "{before}" ({done}), but it' + failed
        check = (f" It's healthy: {_healthy(result)}." if str(result.get("detail", "")).startswith("healthy")
                 else "")
        return f'Updated "{before}": {done}.{check}'
    if name == "revoke_source":
        sid = result.get("data_source_id", "")
        return (f'Revoked "{label}": its stored credential is deleted and it is disconnected; your '
                f"server itself keeps running. To delete it permanently, run: "
                f"concierge source delete {sid} --yes")
    if name == "pause_source":
        return f'Paused "{label}": agents no longer see its tools. Say "resume {label}" to bring it back.'
    if name == "resume_source":
        if status == "active":
            return f'Resumed "{label}": it is healthy again and its tools are back.'
        return f'Resumed "{label}", but it' + failed
    if name == "delete_source_command":
        return (f'I don\'t delete sources from chat — it is permanent. To delete "{label}", run:\n'
                f'  {result.get("command")}\nTo only disconnect it, say "revoke {label}".')
    if name == "list_sources":
        return _sources_reply(result)
    if name == "list_sandboxes":
        names = [s["name"] + (" (current)" if s["name"] == result.get("current") else "")
                 for s in result.get("sandboxes", [])]
        return "Your sandboxes: " + ", ".join(names) + "."
    if name == "list_agents":
        agents = result.get("agents", [])
        if not agents:
            return "There are no agents here yet. Create one with `concierge agent create SLUG`."
        return "Your agents: " + ", ".join(f'{a["slug"]} ({a["name"]})' for a in agents) + "."
    if name == "list_agent_tools":
        return _catalog_reply(result)
    return "Done."


def _sources_reply(result: dict[str, Any]) -> str:
    sources = result.get("sources", [])
    live = [s for s in sources if s["status"] != "disconnected"]
    revoked = len(sources) - len(live)
    sandbox = result.get("sandbox", "default")
    if not live:
        extra = f" ({revoked} revoked)" if revoked else ""
        return (f'You have no MCP sources in sandbox "{sandbox}" yet{extra}. Say "add my MCP '
                'server at <URL>" to register one.')
    lines = [f'You have {len(live)} source{"s" if len(live) != 1 else ""} in sandbox "{sandbox}":']
    for s in live:
        if s["status"] == "active":
            state = f"active, {_tools_count(s.get('tools'))}"
        elif s["status"] == "error":
            state = f"failing: {_plain_error(s.get('health_error')).rstrip('.')}"
        else:
            state = s["status"]
        lines.append(f"- {s['name']} ({s['id']}) — {state}; {s['url']}, auth {s['auth']}, "
                     f"namespace {s['namespace']}")
    if revoked:
        lines.append(f"(plus {revoked} revoked)")
    return "\n".join(lines)


def _catalog_reply(result: dict[str, Any]) -> str:
    agent = result.get("agent")
    who = f"{agent} has" if agent else "This sandbox offers"
    tools = result.get("tools", [])
    trace = result.get("trace", {})
    lines = []
    if not tools:
        lines.append(f"{who} no tools right now.")
    else:
        lines.append(f"{who} {_tools_count(len(tools))} right now:")
        for t in tools[:20]:
            desc = t.get("description") or ""
            desc = desc if len(desc) <= 80 else desc[:79] + "…"
            lines.append(f"- {t['name']}" + (f" — {desc}" if desc else ""))
        if len(tools) > 20:
            lines.append(f"…and {len(tools) - 20} more.")
    for skipped in trace.get("sources_skipped", []):
        why = skipped.get("reason", "skipped")
        detail = f": {_plain_error(skipped['detail']).rstrip('.')}" if skipped.get("detail") else ""
        lines.append(f"Skipped {skipped.get('name', skipped.get('source_id'))} ({why}{detail}).")
    missing = trace.get("allowlist_missing_entries") or []
    if missing:
        lines.append("Allowlist entries that matched no tool: " + ", ".join(missing) + ".")
    return "\n".join(lines)
