"""The intent table: what people ask for, the phrases that say it, and what it leads to.

Each row names an intent, the phrases that express it (see `text.Phrase` for the notation;
messages are read lower-cased with contractions spelled out, so phrases are written that
way: "what is", "do not"), vetoes (phrases that rule it out), and what it does: a read tool
run at once (``tool:``), a slot-filling form (``form:``, see `forms.py`), or a reply
(``reply:``). ``aspect`` says which part of a source an update intent changes.

`classify` scores every row on a message: a row's score is the number of words of its best
phrase found in order (longer phrases are more specific), and a veto removes the row. Weak
rows (greetings, thanks) count only when nothing else matched. Ties go to the row listed first.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

from concierge.agent.models.offline.text import Text, phrase

__all__ = ["INTENTS", "Intent", "IntentHit", "STATUS_WORDS", "classify", "intent_words"]

STATUS_WORDS = frozenset("""
paused active failing failed broken revoked disconnected healthy unhealthy working down up
error errors erroring dead alive running online offline stopped enabled disabled current
""".split())
"""Words describing a source's state: never a name someone meant."""


@dataclass(frozen=True)
class Intent:
    name: str
    does: str
    """``tool:<name>``, ``form:<name>`` or ``reply:<kind>``."""
    phrases: tuple[str, ...]
    vetoes: tuple[str, ...] = ()
    weak: bool = False
    aspect: str | None = None
    """For ``form:update``: the part it changes (name, rate_cap, token, url, auth, allowlist, ...)."""


@dataclass(frozen=True)
class IntentHit:
    intent: Intent
    score: int
    consumed: frozenset[int]
    """Token indices the phrase used (they are not part of any name)."""


_ANY_TOOLS = "tools|tool"

INTENTS: tuple[Intent, ...] = (
    # -- what the concierge cannot do: matched first, so "delete the agent" is not a source delete
    Intent("unsupported_delete_agent", "reply:unsupported_delete_agent",
           ("delete|remove|revoke|drop * agent", "get rid of * agent", "delete|remove * bot")),
    Intent("unsupported_alerts", "reply:unsupported_alerts",
           ("alert", "alerts", "alerting", "notify", "notification", "notifications", "email me",
            "send me * email", "page me", "text me", "warn me", "let me know when|if",
            "tell me when|if", "ping me", "monitoring", "monitor",
            "set up * alert|alerts|notification|notifications|monitoring"), ("ping me * tools",)),
    Intent("unsupported_copy", "reply:unsupported_copy",
           ("copy * to", "copy of", "clone", "duplicate", "copy * into", "same server|source in")),
    Intent("unsupported_audit", "reply:unsupported_audit",
           ("audit", "audit log", "history", "what changed", "who changed", "changelog", "activity log",
            "recent changes", "what happened"),
           ("happens * if|when", "happen * if|when", "will happen", "would happen", "happens to", "happen to")),
    Intent("unsupported_model", "reply:unsupported_model",
           ("gpt", "gpt-4", "gpt-4o", "gpt-5", "openai", "llm", "language model", "use * model",
            "switch * model", "change * model", "which model", "what model", "anthropic", "ollama"),
           ("connect claude", "claude code")),
    Intent("unsupported_keys", "reply:unsupported_keys",
           ("give me * api key", "create * api key", "generate * api key", "new api key for me",
            "api key for * widget|api|http", "make * api key")),
    Intent("unsupported_gateway", "reply:unsupported_gateway",
           ("connect claude|cursor", "claude code", "cursor", "claude desktop", "gateway",
            "use * agent from", "expose * agent", "serve * agent", "mcp endpoint for",
            "where do|does * agent|agents connect", "how do|does * agent|agents connect|reach",
            "agent|agents connect to")),
    Intent("unsupported_pull", "reply:unsupported_pull",
           ("pull", "ingest", "sync * data", "fetch * data", "pull * data", "import * data")),
    Intent("unsupported_reveal", "reply:unsupported_reveal",
           ("what is * token|key|password|secret|credential|credentials", "what * token|key|password * was",
            "show * token|key|password|secret|credential|credentials", "tell me * token|key|password|secret",
            "reveal", "forgot * token|key|password|secret|credential", "see * token|key|password|secret",
            "print * token|key|password|secret", "read * token|key|password|secret",
            "give me * token|password|secret", "remind me * token|key|password|secret",
            "display * token|key|password|secret", "get * token|key|password * back"),
           ("api key for me", "create", "generate", "new", "rotate", "change", "update", "replace", "which",
            "header", "expire", "expires", "expired", "valid", "URL")),
    Intent("unsupported_undo", "reply:unsupported_undo",
           ("undo", "revert", "roll back", "rollback", "take that back", "change * back", "put * back how"),
           ("pause", "undo * pause", "token|key|secret|password")),
    Intent("timeout", "form:update",
           ("timeout", "timeouts", "time out", "timing out", "times out", "timed out", "more time",
            "wait longer", "longer to answer|respond"),
           ("what is|are * timeout", "why", "is|are|does|do * timing|time out"), aspect="timeout"),
    Intent("unsupported_remove_tools", "reply:unsupported_remove_tools",
           ("remove|drop|hide|disable|exclude * tool|tools from", "stop offering|exposing * tool|tools",
            "take * tool|tools off|out of"),
           ("agent", "bot", "can not|cannot|should not|shouldn't use", "only")),
    Intent("unsupported_run_tool", "reply:unsupported_run_tool",
           ("run TOOL", "call TOOL", "execute", "invoke", "call * tool with", "call * tool",
            "run * tool", "use * tool to", "search * docs for", "search the docs", "file * ticket",
            "create * ticket", "open * ticket", "get * ticket", "look up ticket", "what time is it"),
           ("health", "check", "test", "from now on", "call it", "rename", "what does", "what do",
            "how do i", "describe", "explain", "arguments", "parameters", "what input", "called",
            "what can", "what tools", "allow", "only", "able to", "let", "give", "have|has * tool|tools",
            "which|what agent|agents", "who can|could|may|uses|has|calls")),

    # -- sandboxes
    Intent("create_sandbox", "form:create_sandbox",
           ("create|make|add|new * sandbox|workspace", "new sandbox|workspace",
            "set up * sandbox|workspace", "need * fresh|new|another|separate sandbox|workspace",
            "fresh sandbox|workspace called|named", "want * fresh|new|another|separate sandbox|workspace")),
    Intent("switch_sandbox", "form:switch_sandbox",
           ("switch to * sandbox|workspace", "switch sandbox|sandboxes|workspace",
            "change sandbox|workspace", "change * sandbox|workspace to", "go to * sandbox|workspace",
            "use * sandbox|workspace", "work in * sandbox|workspace", "move to * sandbox|workspace",
            "switch to SANDBOX", "go to SANDBOX", "use SANDBOX", "work in SANDBOX", "enter SANDBOX",
            "over to SANDBOX", "hop to SANDBOX", "jump to SANDBOX", "head to SANDBOX", "move to SANDBOX",
            "change to SANDBOX", "move me to", "take me to", "move * to * sandbox|workspace",
            "work in SANDBOX", "let us work in", "let us use SANDBOX", "go into SANDBOX", "into SANDBOX"),
           ("URL", "clone", "copy", "duplicate")),
    Intent("list_sandboxes", "tool:list_sandboxes",
           ("sandboxes", "workspaces", "which sandbox|workspace", "what sandbox|sandboxes|workspace",
            "list * sandboxes|workspaces", "show * sandboxes|workspaces", "current sandbox|workspace",
            "sandbox am i", "workspace am i")),

    # -- agents and the catalog
    Intent("create_agent", "form:create_agent",
           ("create|make|add|new * agent|bot", "set up * agent|bot", "new agent|bot", "agent|bot called|named",
            "want * agent|bot", "need * agent|bot"),
           ("what", "which")),
    Intent("who_uses", "form:who_uses",
           ("which|what agents use|have|call|see|access|get|uses", "which|what agents can|could|may",
            "which|what agent can|could|may|uses|has", "who can|could|may use|call|access|see|get",
            "who uses|has|calls|sees|gets", "who * access to", "which|what agents * access to",
            "who can|could|may", "can|could|does|do|may any agent|agents|bot|bots|one",
            "can|could|does|do|may anyone|anybody",
            "any agent|agents|bot|bots|one|anyone|anybody * access to", "anyone|anybody|somebody|someone able to",
            "any agent|agents|bot|bots able to", "anyone|anybody can|could|may",
            "can|could|does|do|may any of * agents|bots"),
           ("create|make|new * agent|agents|bot|bots", "URL", "help|explain|tell|show", "add|register|connect|hook")),
    Intent("agent_access", "form:agent_access",
           ("let * use|access|call", "let * also", "give * access", "allow * to use|access|call",
            "should only use|access|call", "can only use|access|call", "only use", "use only",
            "can use everything|anything|all", "can now use", "also use", "no longer use",
            "let * do everything|anything", "can do everything|anything", "take * away from",
            "stop using", "can not use|access|call", "should not use|access|call", "access to everything", "take away",
            "not allowed to use|access|call", "not be allowed to use|access|call", "must not use|access|call",
            "may not use|access|call",
            "remove|revoke|drop * access to TOOL", "no more access to TOOL",
            "give * tool|tools too", "give * tool|tools as well", "give * tool|tools also",
            "should|can|could|must * able to", "be able to"),
           ("what|which|how", "offer|expose|serve|register|add", "create|make|new * agent|agents|bot|bots",
            "new", "URL", "more than", "a|per minute|hour|second")),
    Intent("describe_tool", "form:describe",
           ("what does TOOL do", "what does * tool do", "what is * tool for", "what does * do",
            "arguments", "argument", "args", "arg", "parameters", "parameter", "params", "input schema",
            "schema", "what is TOOL for", "what is TOOL", "what TOOL does", "what * it do|does|for",
            "tool * what",
            "what input", "inputs", "how do i call|use TOOL", "how do i call|use * tool",
            "how to call|use", "describe TOOL", "explain TOOL", "describe * tool", "explain * tool",
            "tell me about * tool", "what * TOOL take|takes|need|needs|expect|expects",
            "what * tool take|takes|need|needs|expect|expects"),
           ("source", "server", "what tools")),
    Intent("agent_tools", "form:catalog",
           ("what tools", "which tools", "what tool", "list * tools", "show * tools",
            "tools * have", "tools * has", "tools of", "tools for", "tools * see|sees",
            "tools * available", "available tools", "tools are there", "tools do i have",
            "what can * use|call|do|access|see", "what would * see", "what does * see",
            "have access to", "has access to", "access to what", "what does * have", "what do * have",
            "what * get|gets", "tools * get|gets",
            "catalog", "catalogue", "tools can * call|use", "agent|bot tools", "tools of|on",
            "how many tools does|do|can * have|get|see|use|call", "count * tools", "number of tools"),
           ("allowlist", "allowed tools", "only allow", "all its tools", "all tools", "tools source",
            "tools server", "pause|disable|suspend|deactivate|freeze|mute|unpause|resume|revoke|remove|delete",
            "turn|switch|shut * off|down|on", "take * offline|down")),
    Intent("list_agents", "tool:list_agents",
           ("agents", "list * agents", "show * agents", "which agents", "what agents",
            "who are my agents", "my agents", "any agents", "agents are there"),
           ("tools",)),

    # -- every source at once
    Intent("test_all", "tool:test_all_sources",
           ("test|check|ping|verify|retest|recheck * all|every|everything",
            "health * all|every|everything", "is everything", "everything healthy|working|ok|up|fine",
            "are all", "all * healthy|working|ok|up|fine|reachable", "are my * healthy|working|ok|up|fine",
            "are the * healthy|working|ok|up|fine", "anything broken|failing|down",
            "are * sources|servers healthy|working|ok|up|fine",
            "which|what * down|failing|broken|offline|unhealthy|dead",
            "are any * down|failing|broken", "is anything * down|failing|broken",
            "everything * health|check|test|ping", "all * health check", "check on all|everything",
            "full|complete|entire|whole|thorough * health|check|test|checkup"),
           ("pause|disable|revoke|remove|resume|delete",)),

    # -- changing a source (before the reads: "set the rate cap" is not "show")
    Intent("switch_auth", "form:update",
           ("switch * to * auth|authentication|bearer|header|token",
            "switch * auth|authentication", "change * auth|authentication",
            "change * to * bearer|header|auth", "auth scheme", "authentication scheme",
            "now needs|uses|requires * token|key|auth|bearer|header",
            "needs * token|key|bearer|auth now", "uses * token|key|bearer|auth now",
            "no longer needs|requires|uses * token|key|auth|authentication|bearer|header|credential|password",
            "not need * token|key|auth|authentication|bearer|header|credential|password * anymore|any more",
            "not need * token|key|auth|authentication|bearer|header|credential|password",
            "remove * auth|authentication", "make * send * header",
            "send * token * header", "use * bearer|header instead", "to no auth", "to none",
            "should use * bearer|header|token", "use * bearer|header|token * instead",
            "use|uses|using * bearer|header auth|authentication", "make * use * bearer|header|token|auth",
            "add * auth|authentication", "add * bearer|header",
            "turn off * auth|authentication", "disable * auth|authentication", "drop * auth|authentication",
            "bearer|token|header|auth|key * from now on", "from now on * bearer|token|header|auth|key"),
           ("URL",), aspect="auth"),
    Intent("allow_all", "form:update",
           ("allow all|every", "all * tools again", "every tool", "clear * allowlist",
            "remove * allowlist|restriction|restrictions|limit", "reset * allowlist",
            "no allowlist", "lift * restriction|restrictions", "unrestrict", "all its tools",
            "allow * all", "delete * allowlist", "drop * allowlist", "empty * allowlist",
            "all tools", "every tool", "open * up", "no restrictions", "unlimited tools"),
           ("agent", "rate|per minute|calls"), aspect="allow_all"),
    Intent("allowlist", "form:update",
           ("only allow", "allow only", "only offer", "offer only", "offer just", "just offer",
            "expose only", "only expose", "expose just", "restrict * to", "limit * to TOOL",
            "only * TOOL", "should only", "allowlist", "allowed tools", "set * allowlist",
            "let * offer|expose", "allow TOOL", "limit * to * tool|tools", "restrict * to * tool|tools"),
           ("per minute", "calls", "requests", "per min", "agent", "what tools", "which tools"),
           aspect="allowlist"),
    Intent("rename", "form:update",
           ("rename", "call * from now on", "change * name", "new name", "name * to", "give * name",
            "should be called", "re-name", "relabel", "change * label"),
           ("agent",), aspect="name"),
    Intent("rate_cap", "form:update",
           ("rate cap|limit", "rate", "NUM * per|a|every minute|min|minutes", "NUM * rpm",
            "NUM calls|requests|call|request", "cap * at NUM", "cap * to NUM", "limit * NUM", "max NUM",
            "at most NUM", "throttle", "set * cap", "calls per minute", "requests per minute"),
           ("what is|are * rate", "how many"), aspect="rate_cap"),
    Intent("rotate", "form:update",
           ("rotate", "new token|key|secret|credential|password", "replace * token|key|secret|credential",
            "change * token|key|secret|credential|password", "update * token|key|secret|credential",
            "different token|key", "token changed|expired", "key changed|expired", "refresh * token|key",
            "token|key|secret|credential * leaked|compromised|exposed|stolen|changed|expired|revoked",
            "new * key|token|secret|credential",
            "leaked", "compromised", "swap * token|key|secret|credential",
            "new one for", "rotated|regenerated|reissued|renewed|reset * token|key|secret|credential|password",
            "token|key|secret|credential|password * rotated|regenerated|reissued|renewed|reset",
            "token|key|secret|credential|password * new one",
            "right|correct|proper|real|actual|original|previous|old token|key|secret|credential|password",
            "token|key|secret|credential|password back"),
           ("register|add|connect", "no token|key", "does not need", "no longer"), aspect="token"),
    Intent("move", "form:update",
           ("move", "moved", "point * at|to", "new address|url|endpoint|location", "change * url|address",
            "update * url|address", "url * to URL", "is now at", "now lives at", "now at", "relocate",
            "relocated", "migrate", "migrated", "lives at"),
           ("sandbox", "workspace"), aspect="url"),
    Intent("namespace", "form:update",
           ("namespace", "tool prefix", "prefix"), ("register|add|connect",), aspect="namespace"),

    # -- one source's lifecycle
    Intent("delete", "form:delete",
           ("delete", "permanently", "purge", "erase", "wipe", "destroy", "for good"),
           ("allowlist", "agent")),
    Intent("resume", "form:resume",
           ("resume", "unpause", "reenable", "enable", "turn * back on", "turn * on", "switch * on",
            "switch * back on", "bring * back", "reactivate", "start * again", "restart",
            "unfreeze", "unmute", "back online", "wake up", "activate", "turn * on again",
            "come back", "back on", "start using * again", "put * back", "start * back up",
            "start * up again", "undo * pause", "reverse * pause", "lift * pause", "end * pause"),
           ("auth", "disable")),
    Intent("pause", "form:pause",
           ("pause", "disable", "take * offline", "offline", "stop * for now|while|bit", "shut down",
            "take * down", "turn off", "switch off",
            "stop * temporarily", "turn * off", "switch * off", "suspend", "deactivate",
            "put * on hold", "hold", "mute", "freeze", "shut * off", "disable * for now",
            "stop * from", "stop * calls"),
           ("auth", "unpause", "undo|reverse|lift|end * pause")),
    Intent("approve", "form:approve",
           ("approve", "approve * change|changes|tools|tool", "accept * change|changes|tools|tool",
            "approve * changed|held|new tools|tool|definitions", "approve * tools|tool of",
            "accept * changed|held|new tools|tool|definitions", "approve * changed|held|new tools|tool of",
            "trust * change|changes|tools|tool", "re-pin", "repin", "unhold", "release * held"),
           ("agent",)),
    Intent("revoke", "form:revoke",
           ("revoke", "disconnect", "remove", "unregister", "deregister", "drop", "forget",
            "forget about", "unplug", "get rid of", "detach", "uninstall", "kill", "unlink",
            "cut off", "disable for good", "disconnect|unplug|detach * for good"),
           ("allowlist", "restriction", "auth", "it is", "agent")),
    Intent("register", "form:register",
           ("add", "adding", "register", "connect", "hook up", "hook * up", "plug in", "plug * in",
            "set up", "onboard", "integrate", "attach", "install", "new server|source|mcp|connection",
            "link", "bring in", "add * server|source", "i have * server", "got * server",
            "want * agents to use", "like * agents to use", "let * agents use", "agents * able to use",
            "agents * use * at", "use * mcp at", "use * server", "use * at http|https"),
           ("connected", "allowlist", "api key for me", "alert|alerts|alerting|notify|notification|notifications",
            "monitoring", "is there * limit", "how many * can")),
    Intent("test", "form:test",
           ("test", "check", "health", "health check", "healthcheck", "ping", "is * working",
            "is * up", "is * ok|okay|fine|alive|reachable|healthy|responding|running|online",
            "verify", "retest", "recheck", "diagnose", "try * connection", "reachable",
            "can you reach", "working", "how is * doing|going", "how is * holding up",
            "does * work|respond|answer|connect", "is * broken|down|dead", "still work|working",
            "try connecting|reaching", "try to connect|reach"),
           ("all|every|everything", "what is up", "how are you", "hooked up", "set up", "plugged in")),
    Intent("show", "form:show",
           ("show", "details", "detail", "info", "information", "status", "tell me about", "describe",
            "what is * url|address|status|allowlist|namespace|auth|config|configuration",
            "what * rate cap", "what * rate limit", "what auth", "how is * configured|set up", "configured",
            "last checked", "what is wrong", "why * failing|failed|broken|down|error", "error",
            "look at", "what about", "allowed to", "settings", "when was", "what is the deal with",
            "what is going on with", "what is happening with",
            "how many calls|requests * can", "how many calls|requests * allowed", "how fast can"),
           ("sources", "servers", "everything", "all")),
    Intent("update", "form:update",
           ("change", "update", "edit", "modify", "configure", "reconfigure", "adjust", "tweak",
            "fix", "set"),
           ("sandbox",)),
    Intent("list_sources", "tool:list_sources",
           ("list", "sources", "servers", "what is connected", "what is set up", "what do i have",
            "what have i", "what * connected", "which * connected", "my sources|servers",
            "show * sources|servers", "list * sources|servers", "what sources|servers",
            "which sources|servers", "overview", "everything i", "what * added", "connected",
            "hooked up", "plugged in", "what * hooked|plugged|registered", "compare", "side by side",
            "which * more|most|fewer tools", "how many tools", "show me everything", "show everything",
            "summary", "status of everything", "all of it"),
           ()),

    # -- talking about the conversation itself
    Intent("help", "reply:help",
           ("help", "how does this work", "how does it work", "what can you do", "what can i ask",
            "what can i do", "what is this", "how do i use this", "how to use", "getting started",
            "get started", "what do you do", "who are you", "examples", "example", "usage",
            "what are you", "commands", "how do i start"), weak=False),
    Intent("greet", "reply:greet",
           ("hi", "hello", "hey", "hiya", "yo", "howdy", "greetings", "good morning",
            "good afternoon", "good evening", "hi there", "hello there", "hey there", "morning",
            "sup", "what is up", "how are you", "how is it going"), weak=True),
    Intent("thanks", "reply:thanks",
           ("thanks", "thank you", "cheers", "appreciate", "appreciated", "great", "awesome",
            "perfect", "nice", "cool"), weak=True),
)
"""The intents, most specific first (the order breaks ties)."""


@lru_cache(maxsize=None)
def intent_words(name: str) -> frozenset[str]:
    """Every word of the intent's phrases (they say what is wanted, not which thing)."""
    intent = next((i for i in INTENTS if i.name == name), None)
    if intent is None:
        return frozenset()
    words: set[str] = set()
    for source in intent.phrases:
        for part in source.split():
            if part not in ("*", "NUM", "URL", "REF", "TOOL", "SANDBOX"):
                words.update(part.split("|"))
    return frozenset(words)


def classify(text: Text, *, sandboxes: tuple[str, ...] = ()) -> list[IntentHit]:
    """Every intent the message expresses, best first (strong before weak)."""
    return list(_classify(text.raw, tuple(sandboxes)))


@lru_cache(maxsize=4096)
def _classify(raw: str, sandboxes: tuple[str, ...]) -> tuple[IntentHit, ...]:
    text = Text.read(raw)
    hits: list[tuple[bool, int, int, IntentHit]] = []
    for order, intent in enumerate(INTENTS):
        best: tuple[int, tuple[int, ...]] | None = None
        for source in intent.phrases:
            if "SANDBOX" in source:
                found = _sandbox_phrase(text, source, sandboxes)
                if found is not None and (best is None or len(source.split()) > best[0]):
                    best = (len(source.split()), found)
                continue
            p = phrase(source)
            found = p.find(text)
            if found is not None and (best is None or p.score > best[0]):
                literal = [e for e in p.elements if e is not None]
                best = (p.score, tuple(i for i, e in zip(found, literal) if isinstance(e, frozenset)))
        if best is None:
            continue
        if any(phrase(v).find(text) is not None for v in intent.vetoes):
            continue
        score = best[0]
        if intent.name == "register" and text.urls:
            score += 2  # a verb of adding and an address: a registration, whatever else it says
        hit = IntentHit(intent, score, frozenset(best[1]))  # words only: values stay readable
        hits.append((intent.weak, -score, order, hit))
    hits.sort(key=lambda h: h[:3])
    return tuple(h[3] for h in hits)


def _sandbox_phrase(text: Text, source: str, sandboxes: tuple[str, ...]) -> tuple[int, ...] | None:
    """``switch to SANDBOX``: the phrase's words followed by a known sandbox's name."""
    head = source.replace("SANDBOX", "").strip()
    found = phrase(head).find(text)
    if found is None:
        return None
    after = found[-1] + 1
    names = {s.lower() for s in sandboxes}
    for j in range(after, min(after + 2, len(text.tokens))):
        if text.tokens[j].low in names:
            return (*found, j)
        if text.tokens[j].low not in ("the", "my", "our"):
            break
    return None
