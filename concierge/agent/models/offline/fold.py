"""Folding a conversation into a `State`, one message at a time (the planner's only memory).

- the system message gives the current sandbox and the sandbox names;
- a user message answers the open question, corrects the request, cancels it, or starts a
  new one (a request that names a new target is new, even while a question is open);
- the planner's own messages are replayed through ``decide`` to know what it asked (its
  questions and the purpose of each tool call), since the same state gives the same step;
- a tool result becomes part of the request's world (a fetch), or the answer owed.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import re
from collections.abc import Sequence
from typing import Any

from concierge.agent.models.offline import extract as ex
from concierge.agent.models.offline.decide import agent_entities, decide, source_entities
from concierge.agent.models.offline.entities import leftover_words, pick, resolve, same_url
from concierge.agent.models.offline.forms import (
    FORMS,
    UNREADABLE,
    Ctx,
    fill,
    tidy_aspects,
    unknown_sandbox,
    update_aspects,
)
from concierge.agent.models.offline.intents import IntentHit, classify
from concierge.agent.models.offline.replies import REPLIES, in_user_words, pending_words, reply_for, sentence
from concierge.agent.models.offline.state import Call, Flow, Say, State, World
from concierge.agent.models.offline.text import Text
from concierge.agent.models.offline.tool_question import has_tool
from concierge.agent.models.offline.vocabulary import YES
from concierge.agent.toolkit.results import (
    AgentList,
    Catalog,
    EngineStatus,
    Lifecycle,
    SourceDetails,
    SourceList,
    ToolError,
    ToolResult,
    parse_result,
)

__all__ = ["fold"]

_WRITES = {"register_source", "update_source", "pause_source", "resume_source", "revoke_source",
           "create_agent", "create_sandbox", "accept_tool_changes"}
_FETCHES = {"list_sources", "list_agents", "list_agent_tools"}
_FREE_TEXT = {"name", "slug", "auth_header", "app_namespace"}
# Registry fields (as a tool error names them) and the slot that holds them.
_FIELD_SLOTS = {"url": "url", "base_url": "url", "auth_header": "auth_header", "app_namespace": "app_namespace",
                "rate_cap_per_minute": "rate_cap_per_minute", "name": "name", "allowed_tools": "allowed_tools",
                "slug": "slug", "tool_allowlist": "tool_allowlist"}


def fold(messages: Sequence[dict[str, Any]]) -> State:
    """The state after ``messages`` (OpenAI chat shapes), ready for ``decide``."""
    state = State()
    calls: dict[str, tuple[str, dict[str, Any]]] = {}
    for message in messages:
        role = message.get("role")
        content = message.get("content")
        if role == "system":
            _context(state, str(content or ""))
        elif role == "user":
            _on_user(state, Text.read(str(content or "")))
        elif role == "assistant":
            tool_calls = message.get("tool_calls") or []
            if tool_calls:
                step = decide(state)
                for call in tool_calls:
                    state.calls_seen += 1
                    fn = call.get("function", {})
                    try:
                        args = json.loads(fn.get("arguments") or "{}")
                    except json.JSONDecodeError:
                        args = {}
                    calls[call.get("id", "")] = (fn.get("name", ""), args)
                first = tool_calls[0].get("function", {}).get("name", "")
                _on_call(state, first, calls[tool_calls[0].get("id", "")][1], step)
            elif content:
                _delivered(state, decide(state))
        elif role == "tool":
            name, args = calls.get(message.get("tool_call_id", ""), ("", {}))
            _on_result(state, name, args, parse_result(name, message.get("content")))
    return state


def _context(state: State, system: str) -> None:
    current = re.search(r"^Current sandbox: (.+)$", system, re.M)
    listed = re.search(r"^Sandboxes: (.+)$", system, re.M)
    if current:
        state.sandbox = current.group(1).strip()
    if listed:
        state.sandboxes = tuple(s.replace("(current)", "").strip() for s in listed.group(1).split(",")
                                if s.strip())


def _delivered(state: State, step: Any) -> None:
    """The planner said ``step``: an answer closes the request, a question stays open."""
    state.reply = None
    flow = state.flow
    if not isinstance(step, Say) or flow is None:
        return
    flow.notice = ""
    if step.ends:
        state.last = (flow.form, flow.intent)
        state.flow = None
        return
    flow.asked = step.asks
    flow.choices = step.choices


def _on_call(state: State, name: str, args: dict[str, Any], step: Any) -> None:
    flow = state.flow
    if flow is None:
        return
    if isinstance(step, Call) and step.tool == name:
        flow.expect = step.purpose
    else:  # a call this planner did not make (another model wrote the history)
        flow.expect = "final" if name not in _FETCHES else "fetch"
    flow.asked = None
    if not (isinstance(step, Call) and step.purpose == "fetch"):
        flow.notice = ""  # a fetch (listing the sources first) keeps what is still to be said
    if name in _WRITES:
        flow.proposed = (name, args)
        flow.not_confirmed = False


# --------------------------------------------------------------------------------------------
# The person's messages


def _on_user(state: State, text: Text) -> None:
    state.reply = None
    flow = state.flow
    parked, state.parked = state.parked, None
    declined, state.declined = state.declined, None
    hits = classify(text, sandboxes=state.sandboxes)
    strong = [h for h in hits if not h.intent.weak]
    if ex.is_cancel(text):  # the whole message is "never mind", "forget about it", …
        state.flow = None
        state.reply = Say(REPLIES["cancelled"], "nothing")
        return
    if flow is None and declined is not None and _corrected(state, declined, text, strong):
        return
    if parked is not None and _yes_or_no(state, parked, text, more=bool(strong)):
        return  # the question asked instead of a yes was answered: this is the yes or no
    if flow is not None and flow.not_confirmed and _yes_or_no(
            state, flow, text, more=_names_new_target(state, flow, text, strong)):
        return
    if flow is not None and _answers(state, flow, text, hits):
        return
    if flow is not None and flow.not_confirmed and not strong and not text.urls:
        return  # "hmm, maybe": the change waits, and the answer says nothing was changed
    unconfirmed = flow if flow is not None and flow.not_confirmed else parked
    _start(state, text, hits)
    if unconfirmed is not None and _a_question(state):
        state.parked = unconfirmed  # "what tools would it get?" before saying yes
        if state.reply is not None:
            state.reply = _reminding(state.reply, unconfirmed)


def _corrected(state: State, declined: Flow, text: Text, strong: list[IntentHit]) -> bool:
    """After a no, a message that only changes what was proposed ("call it Support desk
    instead", "use namespace helpdesk"): the change is proposed again with it (and confirmed
    again). A request of another kind, or one naming a source, is a new request."""
    if strong and _names_known(declined, text):
        return False
    corrected = copy.deepcopy(declined)
    changed, used = fill(state, corrected, text)  # stated values only, no bare answer
    if not changed and not used:  # (a value said again, unchanged, also asks for it again)
        return False
    others = [h for h in strong if not h.consumed <= used]  # ("call it Help Desk": not a request for help)
    if not all(_form_of(h) == "update" or _form_of(h) == declined.form and ex.is_correction(text) for h in others):
        return False  # "add http://other/mcp" after a no is a request of its own, not this one changed
    corrected.not_confirmed, corrected.proposed = False, None
    state.flow = corrected
    return True


def _yes_or_no(state: State, unconfirmed: Flow, text: Text, *, more: bool) -> bool:
    """Apply a yes or no to a change that waits unconfirmed; a "yes …" that says ``more`` (a
    request of its own) is not one. A yes proposes it again: the engine asks for the yes properly."""
    answer = ex.yes_no(text)
    if answer is False:
        state.flow = None
        state.reply = Say(REPLIES["cancelled"], "nothing")
        return True
    if answer is True or (text.tokens and text.tokens[0].low in YES and not more):
        state.flow = unconfirmed
        unconfirmed.not_confirmed = False
        fill(state, unconfirmed, text)  # "yes but call it Prod": the correction is taken first
        return True
    return False


_QUESTION_FORMS = frozenset({"catalog", "show", "describe"})
_QUESTION_REPLIES = frozenset({"help", "greet", "thanks", "unsupported"})


def _a_question(state: State) -> bool:
    """The new request only asks (a listing, a catalog, a fixed reply): nothing it does
    replaces the change waiting for a yes."""
    if state.flow is None:
        return state.reply is not None and state.reply.kind in _QUESTION_REPLIES
    return state.flow.form.startswith("read:") or state.flow.form in _QUESTION_FORMS


def _reminding(say: Say, parked: Flow) -> Say:
    """``say`` and, after it, that the change asked about is still waiting."""
    what = pending_words(parked.proposed)
    return dataclasses.replace(say, text=f'{say.text}\n\nNothing was changed yet: say "yes" if you still '
                                          f'want me to {what}, or "no" to drop it.')


_ALL_OF_THEM = re.compile(r"(?i)^\W*(?:both|all|each|every\s*one|all\s+of\s+them|both\s+of\s+them|"
                          r"all\s+\w+|both\s+please|the\s+two|them\s+all)\W*$")


def _answers(state: State, flow: Flow, text: Text, hits: list[IntentHit]) -> bool:
    """Apply ``text`` to the open request if it belongs to it (an answer or a correction)."""
    strong = [h for h in hits if not h.intent.weak]
    asked = flow.asked
    if asked in ("source", "agent", "tool") and flow.choices:
        if strong and _form_of(strong[0]) != flow.form and _form_of(strong[0]) != "reply":
            return False  # "show ht" while asked which one: a new request
        chosen = pick(text, list(flow.choices))
        if chosen is not None:
            flow.target = chosen
            flow.asked, flow.choices = None, ()
            return True
        if strong and _is_new_request(state, flow, text, strong):
            return False
        if asked == "agent" and not strong:
            flow.text, flow.skip = text, frozenset()
            return True
        if asked == "source" and _ALL_OF_THEM.search(text.raw):
            flow.notice = "I change one source at a time."  # then: "Which one do you mean?"
            return True
        flow.notice = "Sorry, I couldn't tell which one you mean."
        return True
    if asked == "sandbox" and flow.form == "switch_sandbox":
        changed, _ = fill(state, flow, text, answering="sandbox")
        if changed:
            flow.slots.pop("unknown_sandbox", None)
            return True
    if strong and _is_new_request(state, flow, text, strong):
        return False
    if asked == "change" and flow.form == "update":
        aspects = update_aspects(text, state)
        if text.urls:
            aspects.add("url")
        flow.aspects |= aspects
    changed, used = fill(state, flow, text, answering=asked)
    if changed:
        flow.not_confirmed = False
        return True
    if flow.not_confirmed or flow.proposed is not None and asked is None:
        return False
    if strong and _form_of(strong[0]) != flow.form:
        return False
    if not strong and hits:
        return False  # a greeting or thanks while a question is open: answer it
    if asked is not None:
        flow.notice = UNREADABLE.get(asked, "Sorry, I didn't get that.")
        return True
    return False


_FOLLOWS = {"catalog", "show", "test", "describe"}
_FOLLOW_WORDS = ("and", "what about", "how about", "same for", "also", "now")
_FOLLOW_WRITES = {"pause", "resume", "revoke", "delete"}
_FOLLOW_WRITE_WORDS = ("and", "same for", "also", "now", "then")
"""After a change: "and ghost2" proposes the same change for it (confirmed, as every change is);
"what about ghost2?" stays a question."""


def _follow_up(state: State, text: Text) -> Flow | None:
    """ "and ops-bot?" right after a question about another one: the same question about it;
    "and ghost2" right after revoking ghost: revoke ghost2 (after its confirmation)."""
    if state.last is None or state.last[0] not in _FOLLOWS | _FOLLOW_WRITES:
        return None
    words = " ".join(t.low for t in text.tokens if t.kind == "word")
    starts = _FOLLOW_WORDS if state.last[0] in _FOLLOWS else _FOLLOW_WRITE_WORDS
    if not any(words == w or words.startswith(w + " ") for w in starts) or len(text.tokens) > 6:
        return None
    form, intent = state.last
    return Flow(form, intent, text)


def _form_of(hit: IntentHit) -> str:
    does = hit.intent.does
    if does.startswith("form:"):
        return does.removeprefix("form:")
    if does.startswith("tool:"):
        return "read:" + does.removeprefix("tool:")
    return "reply"


def _is_new_request(state: State, flow: Flow, text: Text, strong: list[IntentHit]) -> bool:
    """Whether ``text`` is a request of its own rather than an answer or a correction."""
    top = strong[0]
    form = _form_of(top)
    correction = ex.is_correction(text)
    if correction and form in (flow.form, "update", "register") and not _names_new_target(
            state, flow, text, strong):
        return False
    if flow.form == "register" and form == "update" and (flow.not_confirmed or flow.proposed is not None) \
            and not _names_known(flow, text):
        return False  # "can the namespace just be ev?" at the registration's "Go ahead?": a correction
    short = len([t for t in text.tokens if t.kind == "word"]) <= 4 and not text.urls and not text.refs
    if flow.asked in _FREE_TEXT and short and top.score <= 1 and not correction and not _names_known(flow, text):
        return False  # "Test server" is a name, not a request
    if form != flow.form:
        if flow.form == "update" and form in ("register",) and not any(
                t.low in ("add", "register", "connect") for t in text.tokens):
            return False
        return True
    if flow.form == "register":
        verb = top.intent.name == "register"  # said with a verb of adding, not only a URL
        new_url = any(u != flow.slots.get("url") for u in ex.urls(text)) and "url" in flow.slots
        new_label = ex.label(text, allow_as=True)
        different = new_url or (new_label is not None and new_label.value != flow.slots.get("name"))
        return verb and different and not ex.is_correction(text)
    if FORMS.get(flow.form) is not None and FORMS[flow.form].target == "source":
        return _names_new_target(state, flow, text, strong)
    return top.score >= 2  # the same question asked anew ("what tools do I have"), not an answer


def _names_known(flow: Flow, text: Text) -> bool:
    """The message names an existing source by its whole name ("check legacy")."""
    if flow.world.sources is None:
        return False
    found = resolve(text, source_entities(flow.world.sources))
    return found.how in ("name", "id", "url")


def _names_new_target(state: State, flow: Flow, text: Text, strong: list[IntentHit]) -> bool:
    """The message names a source other than the request's target."""
    if FORMS.get(flow.form) is None or FORMS[flow.form].target != "source" or flow.world.sources is None:
        return False
    skip = frozenset().union(*(h.consumed for h in strong)) if strong else frozenset()
    found = resolve(text, source_entities(flow.world.sources), skip=skip)
    if not found.matches or found.how == "pronoun":
        return False
    current = flow.target.key if flow.target is not None else None
    return current is None or all(m.key != current for m in found.matches)


def _start(state: State, text: Text, hits: list[IntentHit]) -> None:
    """A new request."""
    state.flow = None
    strong = [h for h in hits if not h.intent.weak]
    top = strong[0] if strong else (hits[0] if hits else None)
    if top is None:
        if text.raw.strip() and set(text.raw.strip()) <= set("?!. "):
            state.reply = Say(REPLIES["help"], "help")
            return
        if text.urls:
            flow = Flow("register", "register", text, url_only=True)
            _, flow.skip = fill(state, flow, text)
            state.flow = flow
            return
        if ex.yes_no(text) is not None:
            state.reply = Say("Nothing is waiting for a yes or no right now. What would you like to do?",
                              "unknown")
            return
        follow = _follow_up(state, text)
        if follow is not None:
            state.flow = follow
            return
        if leftover_words(text, frozenset()):
            # No request in it, but maybe a name ("clock?"): show it if so, else say so.
            state.flow = Flow("show", "show", text, guess=True)
            return
        state.reply = Say(REPLIES["unknown"], "unknown")
        return
    does = top.intent.does
    if does.startswith("reply:"):
        kind = does.removeprefix("reply:")
        words = REPLIES[kind]
        if kind == "unsupported_run_tool":
            tool = next((t.text for t in text.tokens if "_" in t.low), "NAME")
            words = words.format(tool=tool)
        state.reply = Say(words, kind if kind in ("help", "greet", "thanks") else "unsupported")
        return
    if does.startswith("tool:"):
        state.flow = Flow("read:" + does.removeprefix("tool:"), top.intent.name, text, skip=top.consumed)
        return
    form = does.removeprefix("form:")
    flow = Flow(form, top.intent.name, text, skip=top.consumed)
    if form == "update":
        flow.aspects = tidy_aspects({h.intent.aspect for h in strong
                                     if h.intent.does == "form:update" and h.intent.aspect})
    _, flow.skip = fill(state, flow, text, top.consumed)
    if form == "switch_sandbox" and "sandbox" not in flow.slots:
        unknown = unknown_sandbox(Ctx(text, flow.skip, state, flow))
        if unknown:
            flow.slots["unknown_sandbox"] = unknown.value
    state.flow = flow


# --------------------------------------------------------------------------------------------
# Tool results


def _on_result(state: State, name: str, args: dict[str, Any], result: ToolResult) -> None:
    flow = state.flow
    if isinstance(result, EngineStatus):
        if result.status == "declined":
            state.flow, state.declined = None, flow
            state.reply = Say(_declined(name, args), "nothing")
        elif result.status == "not_confirmed" and flow is not None:
            flow.not_confirmed = True
        return
    if flow is None:
        state.reply = Say(reply_for(name, args, result), "answer", tool=name)
        return
    expect, flow.expect = flow.expect, None
    if expect == "fetch" and not isinstance(result, ToolError):
        _learn(state, flow, name, args, result)
        return
    if isinstance(result, ToolError) and name in _WRITES and _retry_slot(flow, result):
        return
    _remember_focus(state, flow, result)
    kind = "error" if isinstance(result, ToolError) else "answer"
    words = reply_for(name, args, result)
    if name == "list_agent_tools" and args.get("app") and flow.world.sources:
        label = next((s.name for s in flow.world.sources if s.namespace == args["app"]), None)
        if label:
            words = words.replace(f"The source with namespace {args['app']} offers", f'"{label}" offers')
    if name == "list_agent_tools" and kind == "answer" and isinstance(result, Catalog):
        words = has_tool(flow.text, result) or words  # "can helpdesk-bot use the echo tool?": yes or no
    if name == "list_agent_tools" and flow.form == "catalog" and flow.world.agents == [] and kind == "answer":
        words = (f'There are no agents in sandbox "{state.sandbox}" yet; one you create (say "create an '
                 'agent called support") would see what this sandbox offers.\n' + words)
    state.reply = Say(words, kind, tool=name)
    if state.parked is not None:  # a question asked instead of a yes: the change still waits
        state.reply = _reminding(state.reply, state.parked)


def _learn(state: State, flow: Flow, name: str, args: dict[str, Any], result: ToolResult) -> None:
    """A fetch came back: it is part of the request's world now; re-read the messages with it."""
    world: World = flow.world
    if name == "list_sources" and isinstance(result, SourceList):
        world.sources, world.sources_sandbox = result.sources, result.sandbox
        if _unknown_address(flow, result):
            _become_registration(state, flow)
        elif flow.form == "register" and "url" not in flow.slots:
            _maybe_update(state, flow, result)
        elif flow.form in ("agent_access", "create_agent"):
            fill(state, flow, flow.text, flow.skip - _value_tokens(flow))
    elif name == "list_agents" and isinstance(result, AgentList):
        world.agents = result.agents
        if flow.form == "update" and flow.aspects <= {"allowlist", "allow_all"}:
            _maybe_agent_allowlist(state, flow)
        elif flow.form in ("revoke", "delete") and {"from", "access"} & {t.low for t in flow.text.tokens}:
            _maybe_agent_allowlist(state, flow)  # "remove search docs from billing-bot": a tool taken away
    elif name == "list_agent_tools" and isinstance(result, Catalog):
        world.catalog, world.catalog_key = result, (args.get("agent"), args.get("app"))
        if flow.form in ("update", "create_agent", "agent_access"):
            fill(state, flow, flow.text, flow.skip - _value_tokens(flow))


def _maybe_agent_allowlist(state: State, flow: Flow) -> None:
    """ "set support's allowlist to demo_*": the allowlist of an agent, not of a source."""
    agents = agent_entities(flow)
    found = resolve(flow.text, agents, skip=flow.skip)
    if found.one is None or found.how in ("unknown", "pronoun"):
        return
    everything = "allow_all" in flow.aspects
    flow.form, flow.intent, flow.target = "agent_access", "agent_access", found.one
    flow.slots, flow.refused, flow.aspects = {}, set(), set()
    _, flow.skip = fill(state, flow, flow.text, flow.skip)
    if everything:
        flow.slots["mode"] = "all"


def _maybe_update(state: State, flow: Flow, result: SourceList) -> None:
    """ "wiki: add header auth, X-Api-Key" names an existing source: it changes that source."""
    live = [s for s in result.sources if s.status != "disconnected"]
    found = resolve(flow.text, source_entities(live), skip=flow.skip)
    if found.one is None or found.how not in ("name", "id"):
        return
    aspects = update_aspects(flow.text, state) | ({"auth"} if "auth_kind" in flow.slots else set())
    if not aspects:
        return
    flow.form, flow.intent, flow.aspects = "update", "update", aspects
    flow.slots, flow.refused, flow.target = {}, set(), found.one
    _, flow.skip = fill(state, flow, flow.text, flow.skip)


def _unknown_address(flow: Flow, result: SourceList) -> bool:
    """The request points at a URL no source has (and the URL is not a new value for one)."""
    form = FORMS.get(flow.form)
    if form is None or form.target != "source" or not flow.text.urls or "url" in flow.aspects:
        return False
    live = [s for s in result.sources if s.status != "disconnected"]
    return not any(same_url(u, s.url) for u in ex.urls(flow.text) for s in live)


def _become_registration(state: State, flow: Flow) -> None:
    """A URL of a server that is not registered: the request is a registration."""
    flow.form, flow.intent, flow.aspects = "register", "register", set()
    flow.slots, flow.refused, flow.target = {}, set(), None
    _, flow.skip = fill(state, flow, flow.text)


def _value_tokens(flow: Flow) -> frozenset[int]:
    """Tokens of the first message that only tool names were read from (re-read with the catalog)."""
    return frozenset(i for i, t in enumerate(flow.text.tokens) if "_" in t.low or "*" in t.low)


def _retry_slot(flow: Flow, result: ToolError) -> bool:
    """A write the rules refused because of one value: ask for that value again."""
    slot = _FIELD_SLOTS.get(result.field or "")
    if result.error == "namespace_taken":
        slot = "app_namespace"
    if slot is None or slot not in {s.name for s in FORMS[flow.form].slots}:
        return False
    flow.slots.pop(slot, None)
    flow.refused.add(slot)
    flow.proposed = None
    flow.notice = "That didn't work: " + sentence(in_user_words(result.detail))
    return True


def _remember_focus(state: State, flow: Flow, result: ToolResult) -> None:
    if isinstance(result, Lifecycle) and result.data_source_id:
        state.focus = result.data_source_id
    elif isinstance(result, SourceDetails):
        state.focus = result.id
    elif flow.target is not None and flow.world.sources is not None:
        state.focus = flow.target.key


def _declined(name: str, args: dict[str, Any]) -> str:
    what = args.get("name") or args.get("source") or args.get("slug") or "it"
    if name == "register_source":
        return f'OK — I didn\'t register "{what}". Nothing was changed.'
    if name == "revoke_source":
        return f'OK — "{what}" stays connected. Nothing was changed.'
    return "OK — nothing was changed."
