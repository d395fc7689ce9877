"""``decide(state) -> Step``: the planner's next move, a pure function of the folded state.

In order: an answer owed (a tool result, a fixed reply) is said; a dropped confirmation is
asked about again; otherwise the request's form runs: fetch what it must look at (the
sources, the agents, the catalog), resolve its target (asking which one when two could be
meant, saying so when none is), check the target can take the request, ask for the first
required slot still missing, and finally call the tool.
"""

from __future__ import annotations

import re

from typing import Any
from urllib.parse import urlsplit

from concierge.agent.models.offline import extract as ex
from concierge.agent.models.offline.entities import Entity, leftover_words, resolve, same_url
from concierge.agent.models.offline.forms import FORMS, Form, free_namespace, slug, tool_named, tool_named_in
from concierge.agent.models.offline.intents import STATUS_WORDS, intent_words
from concierge.agent.models.offline.replies import REPLIES, agent_label, may_use, pending_words, status_words
from concierge.agent.models.offline.state import Call, Flow, Say, State, Step
from concierge.agent.toolkit.results import SourceRow
from concierge.registry.allowlists import matches_any
from concierge.url_secrets import MASK
from concierge.url_secrets import shown as shown_url

__all__ = ["agent_entities", "decide", "source_entities", "source_ref", "tool_entities"]

_CHANGE_SLOTS = ("name", "url", "auth_kind", "auth_header", "rotate_token", "token_ref",
                 "rate_cap_per_minute", "allowed_tools", "allow_all_tools", "app_namespace", "call_timeout",
                 "connect_timeout")
_AGENT_WORDS = {"agent", "agents", "bot", "bots"}
_WHOLE = {"limit": 1000}
"""A look at the world to find what the words name takes the largest page, not a chat page."""


def decide(state: State) -> Step:
    """The next step (see the module docstring). Never changes ``state``."""
    if state.reply is not None:
        return state.reply
    flow = state.flow
    if flow is None:
        return Say(REPLIES["unknown"], "unknown")
    if flow.not_confirmed:
        what = "register it" if flow.form == "register" else pending_words(flow.proposed)
        return Say(f'Nothing was changed. Say "yes" if you still want me to {what}, or tell me what '
                   "to change.", "ask", asks="confirm", ends=False)
    if flow.form.startswith("read:"):
        return Call(flow.form.removeprefix("read:"), {})
    handler = _HANDLERS.get(flow.form)
    if handler is not None:
        return handler(state, flow)
    return _source_form(state, flow, FORMS[flow.form])


# --------------------------------------------------------------------------------------------
# Helpers


def _prefix(flow: Flow) -> str:
    return f"{flow.notice} " if flow.notice else ""


def _ask(state: State, flow: Flow, form: Form, slot_name: str) -> Say:
    slot = next(s for s in form.slots if s.name == slot_name)
    assert slot.question is not None
    return Say(_prefix(flow) + slot.question(state, flow), "ask", asks=slot_name, ends=False)


def _missing(state: State, flow: Flow, form: Form) -> str | None:
    by_name = {s.name: s for s in form.slots}
    for name in form.asks:
        slot = by_name[name]
        if slot.question is None or name in flow.slots:
            continue
        if name in flow.refused or slot.required_if(flow, state):
            return name
    return None


def source_entities(sources: list[SourceRow]) -> list[Entity]:
    return [Entity(s.id, s.name, (s.name, s.namespace), s.url, s) for s in sources]


def agent_entities(flow: Flow) -> list[Entity]:
    return [Entity(a.slug, a.slug, (a.slug, a.name), None, a) for a in flow.world.agents or []]


def tool_entities(flow: Flow) -> list[Entity]:
    catalog = flow.world.catalog
    if catalog is None:
        return []
    out = []
    for t in catalog.tools:
        original = t.name[len(t.app) + 1:] if t.name.startswith(t.app + "_") else t.name
        out.append(Entity(t.name, t.name, (t.name, original), None, t))
    return out


def source_ref(target: Entity, sources: list[SourceRow]) -> str:
    """How a call names the source: its name when no other source could answer to it, else its id."""
    row: SourceRow = target.data
    clash = [s for s in sources if s.id != row.id and row.name.casefold() in
             (s.name.casefold(), s.namespace.casefold())]
    return row.id if clash else row.name


def _numbered(entities: list[Entity]) -> str:
    lines = []
    for i, e in enumerate(entities, 1):
        row = e.data
        if isinstance(row, SourceRow):
            lines.append(f"{i}. {row.name} ({row.id}, {status_words(row.status)}, {row.url})")
        else:
            lines.append(f"{i}. {e.label}")
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------
# Forms on one source


def _ineligible(form: str, row: SourceRow, flow: Flow) -> str | None:
    """Why ``row`` cannot take the request (None when it can). The registry would refuse or
    do nothing; saying so beats asking for a confirmation."""
    name, status = f'"{row.name}"', row.status
    revoked = status == "disconnected"
    if form == "pause":
        if status == "paused":
            return f"{name} is already paused."
        if revoked:
            return f"{name} is revoked, so there is nothing to pause."
    elif form == "resume":
        if status == "active":
            return f"{name} isn't paused: it is active."
        if status == "error":
            return (f"{name} isn't paused — it is failing its health check. Say \"test {row.name}\" "
                    "to check it again.")
        if revoked:
            return f"{name} is revoked; only registering it again brings it back."
    elif form == "revoke" and revoked:
        return f"{name} is already revoked."
    elif form in ("test", "update") and revoked:
        return f"{name} is revoked; register it again to use it."
    if form == "update" and not revoked:
        kind = flow.slots.get("auth_kind")
        if "token" in flow.aspects and kind is None and row.scheme == "none" and "token_ref" not in flow.slots:
            if MASK in row.url:  # its key is in its URL ("…?api_key=••••")
                example = re.sub(re.escape(MASK), "NEW-KEY", row.url, count=1)
                return (f"{name} takes its key in its URL ({row.url}). To change the key, give the URL with "
                        f'the new key: "{row.name} moved to {example}".')
            return (f"{name} uses no authentication, so there is no token to rotate. To add one, say "
                    f'"{row.name} now needs a bearer token".')
        if kind is not None and kind == row.scheme and kind != "header_token" and len(
                [k for k in _CHANGE_SLOTS if k in flow.slots and k not in ("auth_kind", "rotate_token")]) == 0:
            if kind == "none":
                return f"{name} already uses no authentication."
            return f'{name} already uses a bearer token. To replace it, say "rotate the token for {row.name}".'
    return None


def _ignored(flow: Flow) -> frozenset[str]:
    return intent_words(flow.intent) | STATUS_WORDS


def _guess_agent(flow: Flow) -> Step:
    """A message that only names something: an agent's name asks for its tools."""
    if flow.world.agents is None:
        return Call("list_agents", _WHOLE, "fetch")
    found = resolve(flow.text, agent_entities(flow), skip=flow.skip)
    if found.one is not None and found.how in ("id", "name"):
        return _agent_status(flow, found.one.data) or Call("list_agent_tools", {"agent": found.one.key})
    return Say(REPLIES["unknown"], "unknown")


_PAUSED_WORDS = ("paused", "suspended", "frozen", "disabled", "stopped", "off")
_ASKS_STATUS = re.compile(r"(?i)^\W*(?:is|are)\b.*\b(" + "|".join(_PAUSED_WORDS)
                          + r"|active|enabled|running|working|on)\W*$")
"""A yes/no question about an agent's status: "is helpdesk paused?", "is it running?"."""


def _agent_status(flow: Flow, agent: Any) -> Say | None:
    """The answer to "is helpdesk paused?" (yes or no, and what that means), or None."""
    asked = _ASKS_STATUS.search(flow.text.raw)
    if asked is None:
        return None
    paused = agent.status == "paused"
    yes = paused == (asked.group(1).lower() in _PAUSED_WORDS)
    said = (f"{agent.slug} is paused: the gateway refuses its tool calls until it is resumed "
            f'(say "resume {agent.slug}").' if paused else
            f"{agent.slug} is active: it may use {may_use(agent.tool_allowlist)}.")
    return Say(("Yes — " if yes else "No — ") + said, "answer")


_ASKS_ABOUT = re.compile(r"(?i)^\W*(?:can|could|does|will|may|is)\s+([\w.-]+)\s+\w")
"""A question whose subject follows its first word: "can *support* search docs?"."""


def _none_eligible(form: str, sources: list[SourceRow]) -> str:
    if form == "resume":
        return "None of your sources is paused."
    if form == "pause":
        return "None of your sources is active, so there is nothing to pause."
    return "All of your sources are revoked; there is nothing left to change."


ONE_AT_A_TIME = "I change one source at a time. Which one first?"
"""Asked when a request names several sources ("revoke ghost and ghost2") or the answer is "both"."""


def _no_sources(state: State) -> Say:
    return Say('You have no MCP sources yet. Say "add my MCP server at <URL>" to register one.',
               "not_found")


def _called_by_a_request_word(flow: Flow, entities: list[Entity]) -> Entity | None:
    """The one live source whose whole name or namespace is a word the request's phrase took
    ("dead" in "is dead down?", read as "is * dead")."""
    taken = {flow.text.tokens[i].low for i in flow.skip if i < len(flow.text.tokens)}
    hits = [e for e in entities if e.data.status != "disconnected" and any(
        name.lower() in taken for name in e.names if name)]
    return hits[0] if len(hits) == 1 else None


def resolve_source(state: State, flow: Flow, form: str) -> Entity | Step:
    """The source the request is about, or what to say instead (which one? none like that?)."""
    if flow.target is not None:
        return flow.target
    sources = flow.world.sources or []
    entities = source_entities(sources)
    live = [e for e in entities if e.data.status != "disconnected"]

    def ok(e: Entity) -> bool:
        return _ineligible(form, e.data, flow) is None

    if flow.guess and (asked := _ASKS_ABOUT.match(flow.text.raw)):
        # "can support search docs?" asks about the agent support, whatever a source is called
        if flow.world.agents is None:
            return Call("list_agents", _WHOLE, "fetch")
        if any(asked.group(1).lower() in (a.slug.lower(), a.name.lower()) for a in flow.world.agents):
            return _guess_agent(flow)
    found = resolve(flow.text, entities, skip=flow.skip, focus=state.focus, ignore=_ignored(flow))
    if found.how not in ("id", "url", "name"):  # "is dead down?" of a source called "dead": a word
        called = _called_by_a_request_word(flow, entities)  # the request's own, and the whole name
        if called is not None:
            return called
    if flow.guess and (found.one is None or found.how not in ("id", "url", "name")):
        return _guess_agent(flow)
    if found.matches and found.how != "pronoun":
        matches = found.matches
        if len(matches) == 1:
            return matches[0]
        fitting = [m for m in matches if ok(m)]
        live_matches = [m for m in matches if m.data.status != "disconnected"]
        if len(live_matches) == 1 and found.how in ("name", "id", "url"):
            return live_matches[0]
        choices = fitting or live_matches or matches
        question = ONE_AT_A_TIME if found.each_named else "Which one do you mean?"
        prefix = "" if found.each_named and ONE_AT_A_TIME.startswith(flow.notice) else _prefix(flow)
        return Say(prefix + question + "\n" + _numbered(choices), "ask", asks="source",
                   choices=tuple(choices), ends=False)
    if found.how == "pronoun" and found.one is not None:
        return found.one
    if not live and not entities:
        return _no_sources(state)
    pool = [e for e in live if ok(e)] if form not in ("show", "delete") else (live or entities)
    if found.how == "unknown":
        named = " ".join(found.leftovers)
        if not pool:
            pool = live or entities
        return Say(f'I couldn\'t find a source called "{named}". Which one do you mean?\n' + _numbered(pool),
                   "not_found", asks="source", choices=tuple(pool), ends=False)
    if not live and form not in ("show", "delete"):
        return Say("All of your sources are revoked; there is nothing left to change.", "not_eligible")
    if len(pool) == 1:
        return pool[0]
    if not pool:
        return Say(_none_eligible(form, sources), "not_eligible")
    return Say(_prefix(flow) + "Which one do you mean?\n" + _numbered(pool), "ask", asks="source",
               choices=tuple(pool), ends=False)


_SOURCE_ONLY_VERBS = {"pause": "Pausing", "resume": "Resuming", "revoke": "Revoking", "test": "A health check",
                      "delete": "Deleting"}


def _agent_not_source(slug: str, doing: str) -> str:
    return (f'"{slug}" is an agent, not an MCP source. {doing} applies to sources. For an agent I can '
            f'show its tools ("what tools does {slug} have?"), change which ones it may use ("{slug} '
            f'can only use acme_*"), or pause it ("pause {slug}").')


def _agent_rate_cap(agent: Any, flow: Flow) -> str:
    """Why an agent has no rate cap of its own, and the caps of the sources it calls."""
    allow = agent.tool_allowlist if isinstance(agent.tool_allowlist, list) else []

    def used(row: SourceRow) -> bool:
        stem = row.namespace + "_"
        return not allow or any(p.split("*", 1)[0].startswith(stem) or stem.startswith(p.split("*", 1)[0])
                                for p in allow)

    rows = [r for r in flow.world.sources or [] if r.status != "disconnected" and used(r)]
    text = (f'"{agent.slug}" is an agent, and rate caps belong to MCP sources: a source\'s cap counts the '
            "calls every agent makes to that server.")
    if not rows:
        return text + f" {agent.slug} calls no source yet."
    caps = ", ".join(f'"{r.name}" ({r.rate_cap_per_minute} calls a minute)' if r.rate_cap_per_minute
                     else f'"{r.name}"' for r in rows)
    said = ex.rate_cap(flow.text)
    per_minute = flow.slots.get("rate_cap_per_minute") or (said.value if said else 20)
    return (text + f" {agent.slug} calls {caps}. To cap one, say \"cap {rows[0].name} at {per_minute} calls "
            'a minute".')


def _agent_instead(flow: Flow, form: Form) -> Step | None:
    """A source request that named no source: what to do if it names an agent instead (after
    fetching the agents). "set support's allowlist to demo_*" becomes the agent's in the fold;
    "helpdesk-bot can't call more than 20 times a minute" is told where caps live; "rename
    helpdesk-bot to Support Bot" renames the agent; "pause helpdesk" pauses the agent (the gateway
    refuses its calls) and "resume helpdesk" resumes it; "revoke helpdesk" is told it is an agent."""
    update = form.name == "update"
    allowlist = update and flow.aspects <= {"allowlist", "allow_all"}
    rate_cap = update and "rate_cap" in flow.aspects
    rename = update and flow.aspects == {"name"} and bool(flow.slots.get("name"))
    if not (allowlist or rate_cap or rename or form.name in _SOURCE_ONLY_VERBS or form.name == "show"):
        return None
    if flow.world.agents is None:
        return Call("list_agents", _WHOLE, "fetch")
    if allowlist:
        return None  # the fold has made it the agent's request already, if it names one
    found = resolve(flow.text, agent_entities(flow), skip=flow.skip)
    if found.one is None or found.how not in ("id", "name"):
        return None
    answer = _agent_status(flow, found.one.data)  # "is helpdesk running?" of an agent
    if answer is not None:
        return answer
    if rate_cap:
        return Say(_agent_rate_cap(found.one.data, flow), "not_eligible")
    if rename:
        return Call("update_agent", {"agent": found.one.key, "name": flow.slots["name"]})
    if form.name == "show":  # "show helpdesk-bot", "what's helpdesk-bot's allowlist?"
        agent = found.one.data
        state = ("paused: the gateway refuses its calls until it is resumed" if agent.status == "paused"
                 else agent.status)
        return Say(f"{agent_label(agent)} is an agent, {state}. It may use "
                   f'{may_use(agent.tool_allowlist)}. Ask "what tools does {agent.slug} have?" for its tools '
                   "right now.", "answer")
    if form.name in ("pause", "resume"):  # an agent is paused and resumed as a whole
        status = "paused" if form.name == "pause" else "active"
        if found.one.data.status == status:
            return Say(f"{found.one.key} is already paused." if status == "paused" else
                       f"{found.one.key} isn't paused: it can call its tools.", "not_eligible")
        return Call("update_agent", {"agent": found.one.key, "status": status})
    return Say(_agent_not_source(found.one.key, _SOURCE_ONLY_VERBS[form.name]), "not_eligible")


def _source_form(state: State, flow: Flow, form: Form) -> Step:
    if flow.world.sources is None:
        return Call("list_sources", _WHOLE, "fetch")
    target = resolve_source(state, flow, form.name)
    if isinstance(target, Say) and target.kind == "not_found":
        instead = _agent_instead(flow, form)
        if instead is not None:
            return instead
    if not isinstance(target, Entity):
        return target
    row: SourceRow = target.data
    reason = _ineligible(form.name, row, flow)
    if reason is not None:
        return Say(reason, "not_eligible")
    ref = source_ref(target, flow.world.sources)
    if form.name in _CONSEQUENCES and _HYPOTHETICAL.search(flow.text.raw):
        return _consequence(flow, form.name, row)  # "what happens if I revoke X?": said, not proposed
    if form.name in ("revoke", "delete") and _takes_something_from(flow, target):
        return Say(REPLIES["unsupported_remove_tools"], "unsupported")  # "remove echo from acme": not acme itself
    if form.name != "update":
        return Call(form.tool, {"source": ref})
    return _update(state, flow, form, target, ref)


def _takes_something_from(flow: Flow, target: Entity) -> bool:
    """ "remove echo from acme support": something else (a tool) is taken from the source, which
    is named only after "from"."""
    tokens = flow.text.tokens
    cut = next((i for i, t in enumerate(tokens) if t.low == "from"), None)
    if cut is None:
        return False
    before = resolve(flow.text, [target], skip=flow.skip | frozenset(range(cut, len(tokens))))
    named_after = resolve(flow.text, [target], skip=flow.skip | frozenset(range(cut + 1)))
    between = [t for i, t in enumerate(tokens[:cut]) if i not in flow.skip and t.kind == "word"
               and t.low not in _FILLER_BEFORE_FROM]
    tool_like = any("_" in t.low or "*" in t.low for t in between)  # "remove acme_support_echo from acme"
    return named_after.one is not None and bool(between) and (before.one is None or tool_like)


_FILLER_BEFORE_FROM = frozenset("the a an my our please all its this that it".split())


def _update(state: State, flow: Flow, form: Form, target: Entity, ref: str) -> Step:
    row: SourceRow = target.data
    slots = flow.slots
    if "allowlist" in flow.aspects and flow.world.catalog is None:
        return Call("list_agent_tools", {"app": row.namespace}, "fetch")
    if not flow.aspects and not any(k in slots for k in _CHANGE_SLOTS):
        return Say(_prefix(flow) + f'What would you like to change about "{row.name}"? I can rename it, move '
                   "it to a new URL, switch its auth, rotate its token, or set its rate cap or its allowed "
                   "tools.", "ask", asks="change", ends=False)
    wanted = (("name", "name"), ("url", "url"), ("auth", "auth_kind"), ("auth", "auth_header"),
              ("rate_cap", "rate_cap_per_minute"), ("allowlist", "allowed_tools"),
              ("namespace", "app_namespace"), ("timeout", "call_timeout"))
    by_name = {s.name: s for s in form.slots}
    for aspect, slot_name in wanted:
        slot = by_name[slot_name]
        if aspect in flow.aspects and slot_name not in slots and slot.required_if(flow, state):
            return _ask(state, flow, form, slot_name)
    arguments: dict[str, Any] = {"source": ref}
    for key in ("name", "rate_cap_per_minute", "call_timeout", "connect_timeout"):
        if key in slots:
            arguments[key] = slots[key]
    kind = slots.get("auth_kind")
    if kind == "bearer" and row.scheme == "bearer":  # "the bearer token is now X": a new token, not a switch
        kind = None
    if "token" in flow.aspects and kind is None:
        arguments["rotate_token"] = True
    if "url" in slots and not (row.url and _already_at(row.url, slots["url"])):  # (already there: no move)
        arguments["url"] = slots["url"]
    if kind is not None:
        arguments["auth_kind"] = kind
        if kind == "header_token" and slots.get("auth_header"):
            arguments["auth_header"] = slots["auth_header"]
    if slots.get("token_ref") and (kind or row.scheme) != "none":
        arguments["token_ref"] = slots["token_ref"]
    if "allowed_tools" in slots and "allow_all" not in flow.aspects:
        arguments["allowed_tools"] = slots["allowed_tools"]
    if "allow_all" in flow.aspects:
        arguments["allow_all_tools"] = True
    if "app_namespace" in slots:
        arguments["app_namespace"] = slots["app_namespace"]
    if len(arguments) == 1:
        if "url" in slots:
            same = "" if slots["url"].rstrip("/") == row.url.rstrip("/") else \
                f", which is the same address as {shown_url(slots['url'])} (nothing to change)"
            return Say(f'"{row.name}" is already at {row.url}{same}.', "not_eligible")
        return Say(_prefix(flow) + f'What would you like to change about "{row.name}"?', "ask",
                   asks="change", ends=False)
    return Call("update_source", arguments)


# --------------------------------------------------------------------------------------------
# Registering


def _register(state: State, flow: Flow) -> Step:
    form = FORMS["register"]
    slots = flow.slots
    if "url" not in slots and not slots.get("command"):
        if flow.world.sources is None and not flow.asked and _names_something(flow):
            return Call("list_sources", _WHOLE, "fetch")  # "wiki: add header auth" is about Wiki
        return _ask(state, flow, form, "url")
    sandbox = slots.get("sandbox") or state.sandbox
    if flow.world.sources is None or (flow.world.sources_sandbox or state.sandbox) != sandbox:
        return Call("list_sources", _WHOLE if sandbox == state.sandbox else {"sandbox": sandbox, **_WHOLE},
                    "fetch")
    if flow.url_only and "url" in slots:
        known = [e for e in source_entities(flow.world.sources)
                 if e.data.status != "disconnected" and e.url and same_url(e.url, slots["url"])]
        if len(known) == 1:
            return Call("show_source", {"source": source_ref(known[0], flow.world.sources)})
    missing = _missing(state, flow, form)
    if missing is not None:
        return _ask(state, flow, form, missing)
    namespace = slots.get("app_namespace")
    if namespace is not None:
        holder = next((s for s in flow.world.sources if s.status != "disconnected"
                       and s.namespace.casefold() == str(namespace).casefold()), None)
        if holder is not None:
            return Say(f"The namespace {namespace} is already used by {holder.name} ({holder.id}) in sandbox "
                       f'"{sandbox}". What namespace should it use instead? (letters, digits, _ or -)',
                       "ask", asks="app_namespace", ends=False)
    else:
        namespace = free_namespace(slug(slots["name"]), flow)
    if slots.get("command"):  # a program run on this machine: no URL, no credential
        arguments: dict[str, Any] = {"name": slots["name"], "command": slots["command"], "auth_kind": "none"}
    else:
        arguments = {"name": slots["name"], "url": slots["url"], "auth_kind": slots.get("auth_kind", "none")}
    if slots.get("auth_kind") == "header_token" and not slots.get("command"):
        arguments["auth_header"] = slots["auth_header"]
    if arguments["auth_kind"] not in ("none", "oauth") and slots.get("token_ref") and not slots.get("command"):
        arguments["token_ref"] = slots["token_ref"]
    if sandbox != state.sandbox:
        arguments["sandbox"] = sandbox
    arguments["app_namespace"] = namespace
    for key in ("rate_cap_per_minute", "allowed_tools"):
        if key in slots:
            arguments[key] = slots[key]
    return Call("register_source", arguments)


def _names_something(flow: Flow) -> bool:
    return bool([w for w in leftover_words(flow.text, flow.skip) if w.lower() not in _ignored(flow)])


# --------------------------------------------------------------------------------------------
# Agents, tools, sandboxes


def _wants_agent(flow: Flow) -> bool:
    return any(t.low in _AGENT_WORDS for i, t in enumerate(flow.text.tokens) if i not in flow.skip)


def _catalog(state: State, flow: Flow) -> Step:
    if flow.target is not None:
        return Call("list_agent_tools", {"agent": flow.target.key})
    skip = flow.skip | {i for i, t in enumerate(flow.text.tokens) if t.low in _AGENT_WORDS}
    wants_agent = _wants_agent(flow)
    named = [w for w in leftover_words(flow.text, frozenset(skip)) if w.lower() not in _ignored(flow)]
    if not wants_agent and not named:
        return Call("list_agent_tools", {})
    if flow.world.agents is None:
        return Call("list_agents", _WHOLE, "fetch")
    agents = agent_entities(flow)
    found = resolve(flow.text, agents, skip=frozenset(skip))
    if found.one is not None and found.how != "unknown":
        return Call("list_agent_tools", {"agent": found.one.key})
    listed = ", ".join(a.key for a in agents)
    if len(found.matches) > 1:
        return Say(f"Which agent? You have: {', '.join(m.key for m in found.matches)}.", "ask",
                   asks="agent", choices=tuple(found.matches), ends=False)
    if found.how in ("unknown", "word") or named:
        if not wants_agent:
            if flow.world.sources is None:
                return Call("list_sources", _WHOLE, "fetch")
            source = resolve(flow.text, source_entities(flow.world.sources), skip=frozenset(skip))
            if source.one is not None and source.how not in ("unknown", "pronoun"):
                return Call("list_agent_tools", {"app": source.one.data.namespace})
        if not agents:
            return Call("list_agent_tools", {})
        return Say(f'I couldn\'t find an agent called "{" ".join(named)}". Your agents: {listed}. Which one?',
                   "not_found", asks="agent", choices=tuple(agents), ends=False)
    if not agents:
        return Call("list_agent_tools", {})
    if len(agents) == 1:
        return Call("list_agent_tools", {"agent": agents[0].key})
    return Say(_prefix(flow) + f"Which agent? You have: {listed}.", "ask", asks="agent",
               choices=tuple(agents), ends=False)


def _describe(state: State, flow: Flow) -> Step:
    if flow.world.catalog is None:
        return Call("list_agent_tools", {}, "fetch")
    tools = tool_entities(flow)
    if flow.target is not None:
        return Call("describe_tool", {"tool": flow.target.key})
    found = resolve(flow.text, tools, skip=flow.skip)
    if found.one is not None and found.how not in ("unknown", "pronoun"):
        return Call("describe_tool", {"tool": found.one.key})
    if len(found.matches) > 1:
        return Say("Which tool do you mean?\n" + _numbered(found.matches), "ask", asks="tool",
                   choices=tuple(found.matches), ends=False)
    if not tools:
        return Say("There are no tools in this sandbox's catalog right now: no active source offers any.",
                   "not_found")
    names = ", ".join(t.key for t in tools[:15]) + ("…" if len(tools) > 15 else "")
    named = " ".join(found.leftovers) or "that"
    return Say(f'I couldn\'t find a tool called "{named}". The tools here: {names}. Which one?', "not_found",
               asks="tool", choices=tuple(tools), ends=False)


def _create_agent(state: State, flow: Flow) -> Step:
    form = FORMS["create_agent"]
    if flow.world.agents is None:
        return Call("list_agents", _WHOLE, "fetch")
    if flow.world.catalog is None and _mentions_tools(flow):
        return Call("list_agent_tools", {}, "fetch")
    if flow.world.sources is None and _mentions_tools(flow):  # their names: "that can use demo tools"
        return Call("list_sources", _WHOLE, "fetch")
    missing = _missing(state, flow, form)
    if missing is not None:
        return _ask(state, flow, form, missing)
    slug_value = flow.slots["slug"]
    if any(a.slug == slug_value for a in flow.world.agents or []):
        return Say(f"There is already an agent called {slug_value} in sandbox \"{state.sandbox}\".",
                   "not_eligible")
    arguments: dict[str, Any] = {"slug": slug_value}
    if flow.slots.get("name"):
        arguments["name"] = flow.slots["name"]
    if flow.slots.get("tool_allowlist"):
        arguments["tool_allowlist"] = flow.slots["tool_allowlist"]
    return Call("create_agent", arguments)


def _mentions_tools(flow: Flow) -> bool:
    words = {t.low for t in flow.text.tokens}
    return bool(words & {"tools", "tool", "use", "access", "only", "allowlist", "allow", "with",
                         "can", "may", "could", "should", "cannot", "not", "except", "without"}) or any(
        "_" in w or "*" in w for w in words)


def _agent_access(state: State, flow: Flow) -> Step:
    """Which tools an agent may use: set, add to, take from, or all of them."""
    if flow.world.agents is None:
        return Call("list_agents", _WHOLE, "fetch")
    agents = agent_entities(flow)
    target = flow.target
    if target is None:
        found = resolve(flow.text, agents, skip=flow.skip, ignore=_ignored(flow))
        if found.one is not None and found.how not in ("unknown", "pronoun"):
            target = found.one
        elif len(found.matches) > 1:
            return Say("Which agent? You have: " + ", ".join(m.key for m in found.matches) + ".", "ask",
                       asks="agent", choices=tuple(found.matches), ends=False)
        elif not agents:
            return Say("There are no agents here yet. Create one with `concierge agent create SLUG` or "
                       'say "create an agent called support".', "not_found")
        else:
            listed = ", ".join(a.key for a in agents)
            named = " ".join(found.leftovers)
            lead = f'I couldn\'t find an agent called "{named}". ' if named else ""
            return Say(f"{lead}Which agent? You have: {listed}.", "not_found" if named else "ask",
                       asks="agent", choices=tuple(agents), ends=False)
    row = target.data
    mode = flow.slots.get("mode", "set")
    current = [] if row.tool_allowlist == "all" else list(row.tool_allowlist)
    if mode == "all":
        if not current:
            return Say(f"{row.slug} can already use every tool.", "not_eligible")
        return Call("update_agent", {"agent": row.slug, "allow_all_tools": True})
    if flow.world.catalog is None:
        return Call("list_agent_tools", {}, "fetch")
    if flow.world.sources is None:  # their namespaces: "the clock tools" are clock_*
        return Call("list_sources", _WHOLE, "fetch")
    wanted = flow.slots.get("tool_allowlist")
    if not wanted and mode == "remove":  # (a tool name that fits several tools: say which it has)
        return Say(_prefix(flow) + f"Which tool should {row.slug} lose? It can use now: "
                   f"{', '.join(current) or 'every tool'}.", "ask", asks="tool_allowlist", ends=False)
    if not wanted:
        return _ask(state, flow, FORMS["agent_access"], "tool_allowlist")
    if mode == "add":
        if not current:
            return Say(f"{row.slug} can already use every tool, {', '.join(wanted)} included.", "not_eligible")
        new = current + [w for w in wanted if w not in current]
    elif mode == "remove":
        if not current:
            keep = [t.name for t in flow.world.catalog.tools if t.name not in wanted
                    and not any(_glob(w, t.name) for w in wanted)]
            new = keep
        else:
            new = _without(current, wanted, [t.name for t in flow.world.catalog.tools])
        if not new:
            return Say(f"That would leave {row.slug} with no tools at all; an empty allowlist means every "
                       f'tool. Pause it instead ("pause {row.slug}"), or name the tools it should keep.',
                       "not_eligible")
    else:
        new = list(wanted)
    if new == current:
        return Say(f"{row.slug} already has that allowlist: {', '.join(current) or 'every tool'}.", "not_eligible")
    return Call("update_agent", {"agent": row.slug, "tool_allowlist": new})


def _without(current: list[str], wanted: list[str], catalog: list[str]) -> list[str]:
    """``current`` less ``wanted``: an entry named is dropped, and a glob that covers a named
    tool ("demo_*" less demo_echo) becomes the catalog's other tools it matches."""
    out: list[str] = []
    for entry in current:
        if entry in wanted:
            continue
        if any(ch in entry for ch in "*?[") and any(_glob(entry, w) for w in wanted):
            out += [t for t in catalog if _glob(entry, t) and t not in wanted
                    and not any(_glob(w, t) for w in wanted)]
            continue
        out.append(entry)
    return list(dict.fromkeys(out))


_HYPOTHETICAL = re.compile(r"(?i)\bwhat\s+(?:(?:would|will|does)\s+)?happens?\b|\bwhat\s+if\b|"
                           r"\bwould\s+(?:it|that)\s+break\b|\bis\s+it\s+safe\s+to\b")
"""A question about a change ("what happens to my agents if I revoke X?"), not a request for it."""
_CONSEQUENCES = {
    "pause": "Pausing {name} stops every call to its tools at once (agents get an error saying it is "
             "paused) and keeps everything else: resuming gives the tools back.",
    "revoke": "Revoking {name} deletes its stored credential and disconnects it for good (your server keeps "
              "running): its tools leave every agent's catalog at once. To stop its calls for a while, "
              "pause it instead.",
    "resume": "Resuming {name} checks it again and, when it is healthy, gives its tools back to the agents "
              "allowed them.",
}


def _consequence(flow: Flow, verb: str, row: SourceRow) -> Step:
    """What a pause, revoke or resume of ``row`` would do, and to which agents, without proposing it."""
    if verb != "resume" and flow.world.agents is None:
        return Call("list_agents", _WHOLE, "fetch")
    if verb != "resume" and flow.world.catalog is None:
        return Call("list_agent_tools", {}, "fetch")
    lines = [_CONSEQUENCES[verb].format(name=f'"{row.name}"')]
    if verb != "resume" and flow.world.catalog is not None:
        names = [t.name for t in flow.world.catalog.tools if t.app == row.namespace]
        using = []
        for agent in flow.world.agents or []:
            usable = _usable(agent, names)
            if usable:
                using.append(f"{agent.slug} ({len(usable)} tool{'s' if len(usable) != 1 else ''})")
        lines.append("Agents using its tools now: " + ", ".join(using) + "." if using else
                     "No agent uses its tools now.")
    lines.append(f'Say "{verb} {row.name}" to do it.')
    return Say("\n".join(lines), "answer")


def _who_uses(state: State, flow: Flow) -> Step:
    """ "which agents use demo tools?", "who can call demo_tools_echo?": each agent, and which of
    the source's tools (or whether the tool) its allowlist lets it use, from the live catalog."""
    if flow.world.agents is None:
        return Call("list_agents", _WHOLE, "fetch")
    if flow.world.sources is None:
        return Call("list_sources", _WHOLE, "fetch")
    if flow.world.catalog is None:
        return Call("list_agent_tools", {}, "fetch")
    skip = flow.skip | {i for i, t in enumerate(flow.text.tokens) if t.low in _AGENT_WORDS}
    tool = resolve(flow.text, tool_entities(flow), skip=frozenset(skip))
    source = resolve(flow.text, source_entities(flow.world.sources), skip=frozenset(skip))
    named = tool_named_in(flow.text, frozenset(skip), flow.world.catalog.tools)  # "who can create tickets"
    strong = source.one is not None and source.how in ("id", "name", "url")
    if flow.target is not None:  # the answer to "Which tool do you mean?"
        names, what = [flow.target.key], flow.target.key
    elif tool.one is not None and (tool.how == "id" or tool.how == "name" and not strong):
        names, what = [tool.one.key], tool.one.key  # a tool's catalog name, or its own
    elif named is not None and not strong:
        names, what = [named], named
    elif source.one is None or source.how in ("unknown", "pronoun"):
        offered = ", ".join(s.name for s in flow.world.sources) or "none yet"
        said = " ".join(w for w in source.leftovers if w.lower() not in ("server", "source", "tool", "tools"))
        fits = [e for e in tool_entities(flow) if said and tool_named(e.data, said.lower().split())]
        if len(fits) > 1:  # "search docs": demo_search_docs and clock_search_docs
            return Say("Which tool do you mean?\n" + _numbered(fits[:10]), "ask", asks="tool",
                       choices=tuple(fits[:10]), ends=False)
        lead = f'I couldn\'t find a source or tool called "{said}". ' if said else ""
        return Say(f"{lead}Which source or tool do you mean? Your sources: {offered}.",
                   "not_found" if said else "ask", ends=False)
    else:
        assert source.one is not None
        row: SourceRow = source.one.data
        names = [t.name for t in flow.world.catalog.tools if t.app == row.namespace]
        what = f'"{row.name}"'
        if not names:
            return Say(f'{what} offers no tools right now (it is {row.status}), so no agent can use any of its '
                       "tools.", "not_eligible")
        what += f" ({len(names)} tool{'s' if len(names) != 1 else ''})"
    agents = flow.world.agents
    if not agents:
        return Say(f'No agent can use {what}: there are no agents in sandbox "{state.sandbox}" yet. Say '
                   '"create an agent called support" to make one.', "not_found")
    can, cannot = [], []
    for agent in agents:
        usable = _usable(agent, names)
        paused = " (paused: its calls are refused until it is resumed)" if agent.status == "paused" else ""
        if not usable:
            cannot.append(agent.slug)
        elif len(names) == 1:
            can.append(f"- {agent.slug}{paused}")
        elif len(usable) == len(names):
            can.append(f"- {agent.slug}: all of them{paused}")
        else:
            can.append(f"- {agent.slug}: {len(usable)} of them ({', '.join(usable)}){paused}")
    lines = [f"Who can use {what} in sandbox \"{state.sandbox}\":" if can else
             f"No agent in sandbox \"{state.sandbox}\" can use {what}."] + can
    if cannot:
        whose = "its allowlist leaves" if len(cannot) == 1 else "their allowlists leave"
        lines.append(f"Not {', '.join(cannot)} ({whose} {'them' if len(names) > 1 else 'it'} out)." if can else
                     f"{whose.capitalize()} {'them' if len(names) > 1 else 'it'} out: {', '.join(cannot)}.")
    return Say("\n".join(lines), "answer")


def _usable(agent: Any, names: list[str]) -> list[str]:
    """Which of the catalog tools ``names`` the agent's allowlist lets it use (the registry's rule)."""
    allow = [] if agent.tool_allowlist == "all" else list(agent.tool_allowlist)
    return [n for n in names if not allow or matches_any(allow, n)]


def _glob(pattern: str, name: str) -> bool:
    import fnmatch

    return fnmatch.fnmatchcase(name, pattern)


def _switch_sandbox(state: State, flow: Flow) -> Step:
    form = FORMS["switch_sandbox"]
    name = flow.slots.get("sandbox")
    if name is None:
        unknown = flow.slots.get("unknown_sandbox")
        if unknown:
            return Say(f'There is no sandbox called "{unknown}". Your sandboxes: {", ".join(state.sandboxes)}. '
                       "Which one?", "not_found", asks="sandbox", ends=False)
        return _ask(state, flow, form, "sandbox")
    if any(t.low in _MOVING for t in flow.text.tokens):  # "move demo tools into staging": a source, not us
        if flow.world.sources is None:
            return Call("list_sources", _WHOLE, "fetch")
        found = resolve(flow.text, source_entities(flow.world.sources), skip=flow.skip)
        if found.matches and found.how in ("id", "name", "url", "word"):
            row: SourceRow = found.matches[0].data
            return Say(f'Sources can\'t move between sandboxes: each sandbox keeps its own sources, agents and '
                       f'credentials. To use "{row.name}" in "{name}" too, say "switch to {name}", then register '
                       f'it there ("add {row.url}"); it stays in "{state.sandbox}" until you revoke it.',
                       "not_eligible")
    if name == state.sandbox:
        return Say(f'You are already working in sandbox "{name}".', "not_eligible")
    return Call("switch_sandbox", {"sandbox": name})


_MOVING = frozenset({"move", "moving", "transfer", "copy", "migrate", "put"})


def _create_sandbox(state: State, flow: Flow) -> Step:
    form = FORMS["create_sandbox"]
    name = flow.slots.get("name")
    if name is None:
        return _ask(state, flow, form, "name")
    if any(s.lower() == str(name).lower() for s in state.sandboxes):
        return Say(f'You already have a sandbox called "{name}".', "not_eligible")
    return Call("create_sandbox", {"name": name})


_HANDLERS = {
    "register": _register, "catalog": _catalog, "describe": _describe, "create_agent": _create_agent,
    "agent_access": _agent_access, "who_uses": _who_uses,
    "switch_sandbox": _switch_sandbox, "create_sandbox": _create_sandbox,
}


def _already_at(current: str, given: str) -> bool:
    """Whether ``given`` names the URL a source is at: the same endpoint and query (a key in
    ``given``, a reference, may be a new one: then it is a change)."""
    if "[secret:" in given or not same_url(current, given):
        return False
    return urlsplit(current).query == urlsplit(shown_url(given)).query
