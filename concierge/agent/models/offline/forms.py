"""Slot-filling forms, one per request (the shape of Rasa forms).

A `Form` lists its `Slot`s. Each slot bundles its extractor (read from any message, so
several facts can come in one), the question that asks for it, how to read a bare answer
to that question, its validation hook and when it is required. Validation is the
registry's own: a value is checked by the registry's request models (`UpdateSource`,
`AgentCreate`), and their message is shown in the person's words — nothing is re-stated.

`fill` applies one message to a flow. Later values replace earlier ones, so a correction
("actually, it's http://…/mcp and it has no auth") updates exactly the slots it names.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, cast
from urllib.parse import urlsplit

from pydantic import ValidationError

from concierge.agent.models.offline import extract as ex
from concierge.agent.models.offline.intents import classify
from concierge.agent.models.offline.replies import in_user_words, sentence
from concierge.agent.models.offline.state import Flow, State
from concierge.agent.models.offline.text import Text, phrase
from concierge.agent.models.offline.vocabulary import ASPECT_WORDS, FILLER, GENERIC, STOPWORDS, yes_or_no
from concierge.registry import validation as rules
from concierge.url_secrets import MASK
from concierge.registry.models import AgentCreate, UpdateSource

__all__ = [
    "Ctx",
    "FORMS",
    "Form",
    "Slot",
    "UNREADABLE",
    "default_label",
    "fill",
    "free_namespace",
    "registry_field",
    "slug",
    "tidy_aspects",
    "unknown_sandbox",
    "update_aspects",
]


@dataclass(frozen=True)
class Ctx:
    """What an extractor may look at: the message, the words already used, the flow."""

    text: Text
    skip: frozenset[int]
    state: State
    flow: Flow
    answering: bool = False
    """The message answers this slot's question (a bare value is enough)."""


Extractor = Callable[[Ctx], "ex.Found | None"]
Check = Callable[[Any, Flow, State], tuple[Any, str | None]]


@dataclass(frozen=True)
class Slot:
    name: str
    extract: Extractor
    question: Callable[[State, Flow], str] | None = None
    """Asked when the slot is required and missing; None: never asked (optional)."""
    answer: Extractor | None = None
    """How a bare reply to the question is read (when ``extract`` finds nothing)."""
    validate: Check | None = None
    required_if: Callable[[Flow, State], bool] = lambda flow, state: True
    aspect: str | None = None
    """For updates: extracted only when the request is about this aspect."""


@dataclass(frozen=True)
class Form:
    name: str
    tool: str
    slots: tuple[Slot, ...]
    """In extraction order (labels before auth words, so "call it Public API" is not "public")."""
    asks: tuple[str, ...] = ()
    """The order questions are asked in."""
    target: str | None = None
    """``source`` when the request acts on one existing source."""


# --------------------------------------------------------------------------------------------
# Validation hooks: the registry's rules, asked one field at a time


def registry_field(field: str) -> Check:
    """Check one source field with the registry's own update model; its message if refused."""
    def check(value: Any, flow: Flow, state: State) -> tuple[Any, str | None]:
        try:
            request = UpdateSource.model_validate({field: value})
        except ValidationError as exc:
            return None, sentence(in_user_words(rules.from_pydantic(exc).detail))
        return getattr(request, field), None
    return check


def _agent_field(field: str) -> Check:
    def check(value: Any, flow: Flow, state: State) -> tuple[Any, str | None]:
        body = {"slug": "x", field: value} if field != "slug" else {"slug": value}
        try:
            request = AgentCreate.model_validate(body)
        except ValidationError as exc:
            return None, sentence(in_user_words(rules.from_pydantic(exc).detail))
        return getattr(request, field), None
    return check


def _check_namespace(value: Any, flow: Flow, state: State) -> tuple[Any, str | None]:
    value, error = registry_field("app_namespace")(value, flow, state)
    if error:
        return None, error
    for s in flow.world.sources or []:
        if s.status != "disconnected" and s.namespace.casefold() == str(value).casefold():
            return None, (f"The namespace {value} is already used by {s.name} ({s.id}) in sandbox "
                          f'"{flow.world.sources_sandbox or state.sandbox}".')
    return value, None


def slug(label: str) -> str:
    """A namespace from a label: "Acme docs" -> acme_docs."""
    value = re.sub(r"[^a-z0-9]+", "_", label.lower()).strip("_")[:40].strip("_")
    return value or "mcp"


def free_namespace(base: str, flow: Flow) -> str:
    """``base``, or ``base_2``, ``base_3``… when a live source of the sandbox already has it."""
    taken = {s.namespace.casefold() for s in flow.world.sources or [] if s.status != "disconnected"}
    if base.casefold() not in taken:
        return base
    n = 2
    while f"{base}_{n}".casefold() in taken:
        n += 1
    return f"{base}_{n}"


def default_label(url: str, command: str | None = None) -> str:
    if command:  # "uvx mcp-server-git" -> git; "npx -y @modelcontextprotocol/server-everything" -> everything
        words = [w for w in command.split()[1:] if not w.startswith("-")] or command.split()[:1]
        name = words[0].rsplit("/", 1)[-1].split("@")[0]
        for prefix in ("mcp-server-", "mcp_server_", "server-", "mcp-"):
            name = name.removeprefix(prefix)
        return name or "local"
    host = (urlsplit(url).hostname or "server").lower()
    if host in rules.LOCAL_HOSTS:
        return "local"
    try:
        ipaddress.ip_address(host.strip("[]"))
        return "server"  # an address, not a name
    except ValueError:
        pass
    parts = [p for p in host.split(".")[:-1] if p not in _SERVICE_SUBDOMAINS]  # (never the TLD)
    return parts[0] if parts else host.split(".")[0]


_SERVICE_SUBDOMAINS = frozenset("mcp www api tools tool app apps server servers service services gateway".split())
"""Host labels that say what kind of server it is, not whose: tools.acme.dev is "acme"."""


# --------------------------------------------------------------------------------------------
# Extractors bound to the context


def _command(ctx: Ctx) -> ex.Found | None:
    return ex.command(ctx.text)


def _no_url_for_a_program(flow: Flow, state: State) -> bool:
    return not flow.slots.get("command")


def _url(ctx: Ctx) -> ex.Found | None:
    if ctx.flow.form == "register" and ctx.flow.slots.get("command") and not ctx.text.urls:
        return None
    found = ex.urls(ctx.text)
    if not found:
        return None
    used = frozenset(i for i, t in enumerate(ctx.text.tokens) if t.kind in ("url", "num")
                     and (t.kind == "url" or f":{t.low}/" in found[0]))
    url = found[-1] if ctx.flow.slots.get("url") else found[0]
    if "[secret:" in url:  # "…/mcp?api_key=sk_live_…": the key stays where the server reads it, by reference
        url = _whole_url(ctx.text, url)
        ctx.flow.notice = URL_CREDENTIAL
    return ex.Found(url, used)


URL_CREDENTIAL = (f"The key stays in the URL, where the server reads it: it is kept encrypted and shown as {MASK}, "
                  "never in clear.")


def _url_holds_key(flow: Flow, state: State) -> bool:
    return "[secret:" in str(flow.slots.get("url") or "")


def _auth_needed(flow: Flow, state: State) -> bool:
    """The auth question, unless a program is run or the URL carries the key."""
    return _no_url_for_a_program(flow, state) and not _url_holds_key(flow, state)


def _refs_in_urls(text: Text) -> frozenset[str]:
    """The references that are part of a URL of the message (its query's key), not a token."""
    wholes = [_whole_url(text, url) for url in ex.urls(text) if "[secret:" in url]
    return frozenset(ref for ref in text.refs if any(f"[secret:{ref}]" in whole for whole in wholes))


def _whole_url(text: Text, url: str) -> str:
    """``url`` as typed, up to the next space (its reference's "]" ends the URL token early)."""
    start = text.raw.find(url.partition("[secret:")[0])
    if start < 0:
        return url
    match = re.match(r"\S+", text.raw[start:])
    return match.group().rstrip(".,;:!?)") if match else url


def _label(ctx: Ctx) -> ex.Found | None:
    return ex.label(ctx.text, allow_as=True)


_OK_DEFAULT = re.compile(r"^(ok|okay|yes|yep|sure|fine|default|skip|that is fine|sounds good|"
                         r"that works|use that|go with that|keep it|whatever)$")


def _not_a_value(ctx: Ctx) -> bool:
    """A bare yes or no is an answer to a different question, never a name."""
    return yes_or_no(ctx.text.raw) is not None or ex.is_cancel(ctx.text)


def _without_filler_end(value: str) -> str:
    """"support desk instead" -> "support desk"."""
    return re.sub(r"\s+(?:instead|please|then|rather)$", "", value, flags=re.I)


def _label_answer(ctx: Ctx) -> ex.Found | None:
    words = " ".join(t.low for t in ctx.text.tokens)
    if _OK_DEFAULT.match(words) or words in ("y", "yeah", "yep", "yup", "the default"):
        return ex.Found(suggested_label(ctx.flow), frozenset(range(len(ctx.text.tokens))))
    value = ctx.text.raw.strip().strip("\"'“”`").rstrip(".!")
    value = re.sub(r"^(?:call it|name it|it is|its|it's|let's call it|how about)\s+", "", value, flags=re.I)
    value = value.strip().strip("\"'“”`")
    value = _without_filler_end(value)
    if value.startswith("the ") and len(value.split()) > 2:
        value = value[4:]  # "the support desk": the article is not part of the name ("The Hub" keeps it)
    if not value or ctx.text.urls or ctx.text.refs or len(value) > 200:
        return None
    return ex.Found(value, frozenset(range(len(ctx.text.tokens))))


def _label_skip(ctx: Ctx) -> frozenset[int]:
    found = ex.label(ctx.text, allow_as=True)
    return ctx.skip | (found.used if found else frozenset())


def _auth(ctx: Ctx) -> ex.Found | None:
    return ex.auth_kind(ctx.text, _label_skip(ctx), answering=ctx.answering)


def _header(ctx: Ctx) -> ex.Found | None:
    return ex.header_name(ctx.text, answering=ctx.answering)


def _ref(ctx: Ctx) -> ex.Found | None:
    in_urls = _refs_in_urls(ctx.text) if ctx.text.refs else frozenset()
    refs = [ref for ref in ctx.text.refs if ref not in in_urls]
    if not refs:
        return None
    used = frozenset(i for i, t in enumerate(ctx.text.tokens) if t.kind == "ref" and t.text not in in_urls)
    return ex.Found(f"[secret:{refs[-1]}]", used)


def _sandbox(ctx: Ctx) -> ex.Found | None:
    return ex.sandbox_mention(ctx.text, ctx.state.sandboxes)


def _sandbox_name_answer(ctx: Ctx) -> ex.Found | None:
    return None if _not_a_value(ctx) else _namespace_answer(ctx)


def _sandbox_answer(ctx: Ctx) -> ex.Found | None:
    words = [t.low for t in ctx.text.tokens if t.low not in ("the", "one", "sandbox", "please", "in", "use")]
    everything = frozenset(range(len(ctx.text.tokens)))
    if not words or words in (["current"], ["this"], ["ok"], ["okay"], ["here"], ["same"]):
        return ex.Found(ctx.state.sandbox, everything)
    names = {s.lower(): s for s in ctx.state.sandboxes}
    if len(words) == 1 and words[0] in names:
        return ex.Found(names[words[0]], everything)
    if len(words) == 1 and words[0].isdigit() and 1 <= int(words[0]) <= len(ctx.state.sandboxes):
        return ex.Found(ctx.state.sandboxes[int(words[0]) - 1], everything)
    return None


def _namespace(ctx: Ctx) -> ex.Found | None:
    return ex.namespace(ctx.text)


def _namespace_answer(ctx: Ctx) -> ex.Found | None:
    if _not_a_value(ctx):
        return None
    words = [t for t in ctx.text.tokens if t.low not in ("use", "the", "namespace", "please", "it", "call",
                                                         "called", "name")]
    if len(words) == 1 and re.fullmatch(r"[A-Za-z0-9_-]{1,64}", words[0].text):
        return ex.Found(words[0].text, frozenset(range(len(ctx.text.tokens))))
    return None


def _rate(ctx: Ctx) -> ex.Found | None:
    return ex.rate_cap(ctx.text)


def _call_timeout(ctx: Ctx) -> ex.Found | None:
    return ex.timeout(ctx.text, "call")


def _connect_timeout(ctx: Ctx) -> ex.Found | None:
    return ex.timeout(ctx.text, "connect")


def _seconds_answer(ctx: Ctx) -> ex.Found | None:
    """A bare answer to "how many seconds?": "90", "2 minutes"."""
    return ex.timeout(ctx.text, "call")


def _timeout_check(field: str, what: str, most: int) -> Check:
    """A timeout in seconds within the registry's range, refused in words of seconds."""
    def check(value: Any, flow: Flow, state: State) -> tuple[Any, str | None]:
        if not 0 < float(value) <= most:
            return None, (f"The timeout for {what} can be at most {most} seconds ({most // 60:g} minutes), and "
                          f"more than 0 (you said {float(value):g} seconds).")
        return registry_field(field)(value, flow, state)
    return check


def _call_timeout_needed(flow: Flow, state: State) -> bool:
    return "timeout" in flow.aspects and "connect_timeout" not in flow.slots


def _number_answer(ctx: Ctx) -> ex.Found | None:
    nums = [i for i, t in enumerate(ctx.text.tokens) if t.kind == "num"]
    if len(nums) == 1:
        return ex.Found(int(ctx.text.tokens[nums[0]].low), frozenset(nums))
    return None


def _allowed(ctx: Ctx) -> ex.Found | None:
    return ex.tool_names(ctx.text, skip=ctx.skip)


def _source_allowlist(ctx: Ctx) -> ex.Found | None:
    """Tool names for a source's allowlist (known names from its catalog when loaded; "only
    the ticket tools": every one of its tools whose own name has that word)."""
    known = _known_tools(ctx.flow, original=True)
    found = ex.tool_names(ctx.text, known, skip=ctx.skip)
    if found is not None or ctx.flow.world.catalog is None:
        return found
    names: list[str] = []
    used: set[int] = set()
    for i in sorted(_topic_words(ctx.text.tokens, ctx.skip)):
        low = ctx.text.tokens[i].low
        topical = [_original(e.name, e.app) for e in ctx.flow.world.catalog.tools if tool_named(e, [low])]
        if topical:
            names += topical
            used.add(i)
    return ex.Found(list(dict.fromkeys(names)), frozenset(used)) if names else None


def _known_tools(flow: Flow, *, original: bool) -> dict[str, str]:
    catalog = flow.world.catalog
    if catalog is None:
        return {}
    known: dict[str, str] = {}
    for entry in catalog.tools:
        name = _original(entry.name, entry.app) if original else entry.name
        known[name.lower()] = name
    for names in catalog.trace.allowlist_filtered_out.values():
        for name in names:
            known.setdefault(name.lower(), name)
    return known


def _original(name: str, app: str) -> str:
    return name[len(app) + 1:] if name.startswith(app + "_") else name


def _true_for(aspect: str) -> Extractor:
    def extract(ctx: Ctx) -> ex.Found | None:
        return ex.Found(True, frozenset()) if aspect in ctx.flow.aspects else None
    return extract


_CORRECTED_NAME = re.compile(r"(?i)^(?:\W*(?:hmm+|no|nah|wait|actually|sorry|oh|um+|ok|okay|rather)\b[\s,.!]*)*"
                             r"(?:call it|name it|make it|rename it to|change it to|let us call it)\s+(.+?)"
                             r"(?:\s+(?:instead|please|then|rather))?[.!]*$")


def _new_name(ctx: Ctx) -> ex.Found | None:
    found = ex.new_name(ctx.text)
    if found is None and ctx.flow.slots.get("name") and not ctx.text.urls:  # a rename being corrected
        match = _CORRECTED_NAME.match(ctx.text.raw.strip())
        value = match.group(1).strip("\"'“”` ") if match else ""
        if value and len(value) <= 200:
            return ex.Found(value, frozenset(range(len(ctx.text.tokens))))
    if found is None:
        return None
    value, target = cast(tuple[str, frozenset[int]], found.value)  # what new_name finds
    return ex.Found(value, found.used - target)


def _new_name_answer(ctx: Ctx) -> ex.Found | None:
    if _not_a_value(ctx):
        return None
    value = ctx.text.raw.strip().strip("\"'“”`").rstrip(".!")
    value = re.sub(r"^(?:call it|name it|rename it to|make it|to)\s+", "", value, flags=re.I).strip("\"'“”` ")
    value = _without_filler_end(value)
    if not value or ctx.text.urls or len(value) > 200:
        return None
    return ex.Found(value, frozenset(range(len(ctx.text.tokens))))


def _update_auth(ctx: Ctx) -> ex.Found | None:
    return ex.auth_kind(ctx.text, ctx.skip, answering=ctx.answering)


def _agent_slug(ctx: Ctx) -> ex.Found | None:
    found = ex.agent_name(ctx.text)
    if found is None:  # "… , call it helper"; a correction: "no wait, call it ops-triage"
        found = ex.label(ctx.text)
    if found is None:
        return None
    return ex.Found(ex.slugify(str(found.value)), found.used)


def _agent_display_name(ctx: Ctx) -> ex.Found | None:
    found = ex.agent_name(ctx.text)
    if found is None:
        return None
    value = str(found.value)
    return ex.Found(value, found.used) if ex.slugify(value) != value else None


def _slug_answer(ctx: Ctx) -> ex.Found | None:
    if _not_a_value(ctx):
        return None
    words = [t for t in ctx.text.tokens if t.low not in STOPWORDS and t.low not in FILLER
             and t.low not in ("call", "name", "agent", "slug")]
    if not words or ctx.text.urls:
        return None
    value = ctx.text.span_text(ctx.text.tokens.index(words[0]), ctx.text.tokens.index(words[-1]))
    return ex.Found(ex.slugify(value), frozenset(range(len(ctx.text.tokens))))


def _agent_allowlist(ctx: Ctx) -> ex.Found | None:
    """"only use demo_* tools", "that can use search_docs and echo", "with the demo tools"."""
    text = ctx.text
    slug_found = ex.agent_name(text)
    skip = ctx.skip | (slug_found.used if slug_found else frozenset())
    known = _known_tools(ctx.flow, original=False)
    catalog = ctx.flow.world.catalog.tools if ctx.flow.world.catalog else []
    excluded = None
    if ctx.flow.form == "create_agent" and catalog:  # what a new agent must not use is not what it may
        excluded = _tools_after(text.tokens, _EXCLUDING_WORDS, skip, catalog)
        skip = skip | (excluded[1] if excluded else frozenset())
    by_original: dict[str, list[str]] = {}
    for advertised in known.values():
        for entry in catalog:
            if entry.name == advertised:
                by_original.setdefault(_original(entry.name, entry.app).lower(), []).append(entry.name)
    names: list[str] = []
    used: set[int] = set()
    namespaces = {s.namespace.lower(): s.namespace for s in ctx.flow.world.sources or []}
    namespaces |= {e.app.lower(): e.app for e in catalog}
    tokens = text.tokens
    named = _source_names(ctx.flow)
    name_words = [t.low if t.kind == "word" and j not in skip else "" for j, t in enumerate(tokens)]
    for i, token in enumerate(tokens):
        if i in skip or i in used or token.kind != "word":
            continue
        nxt = tokens[i + 1].low if i + 1 < len(tokens) else ""
        span = _named_source_at(name_words, i, named)
        if span is not None:  # "that can use demo tools" (a source called "demo tools"): all of its tools
            names.append(f"{span[0]}_*")
            used |= span[1]
        elif token.low in namespaces and nxt in ("tools", "tool", "ones"):
            names.append(f"{namespaces[token.low]}_*")
            used |= {i, i + 1}
        elif "_" in token.low or "*" in token.low:
            matches = by_original.get(token.low, [])
            names.append(known.get(token.low) or (matches[0] if len(matches) == 1 else None) or token.text)
            used.add(i)
        elif token.low in by_original and len(by_original[token.low]) == 1 and \
                token.low not in ("tools", "agent"):
            names.append(by_original[token.low][0])
            used.add(i)
    for i in _topic_words(tokens, skip | used):  # "the ticket tools": every *_ticket* tool
        word = _singular(tokens[i].low)
        if word in namespaces:
            continue
        app = namespaces.get(tokens[i - 1].low) if i else None  # "the clock echo tool": clock's only
        topical = [entry.name for entry in catalog if word in _name_words(entry)
                   and (app is None or entry.app == app)]
        if topical:
            names += topical
            used.add(i)
    if not names:  # "let scout also use sum", "should also be able to search the docs"
        for i, token in enumerate(tokens):
            after_able = token.low == "to" and i > 0 and tokens[i - 1].low == "able"
            if (token.low not in ("use", "access", "call", "take", "away", "remove", "drop", "lose")
                    and not after_able) or i in skip:
                continue
            hit = _tool_named_by(tokens, range(i + 1, min(i + 5, len(tokens))), skip, catalog)
            if hit is not None:
                names.append(hit[0])
                used |= hit[1]
                break
    if not names:  # "a bot that can search docs (and get tickets) but not create tickets": what it *can* do
        negated = frozenset(i for i in range(len(tokens) - 1) if tokens[i + 1].low in _NEGATIONS)
        allowed = _tools_after(tokens, _MAY, frozenset(skip) | negated, catalog)
        if allowed:
            names += allowed[0]
            used |= allowed[1]
    if not names and excluded:
        # "that can do everything except create tickets", "it cannot create tickets": the
        # sandbox's tools less those (an allowlist names what it may use; the proposal lists them)
        names = [entry.name for entry in catalog if entry.name not in excluded[0]]
        used |= excluded[1]
    names = list(dict.fromkeys(names))
    return ex.Found(names, frozenset(used)) if names else None


def _tools_after(tokens: list[Any], triggers: frozenset[str], skip: frozenset[int],
                 catalog: list[Any]) -> tuple[list[str], set[int]] | None:
    """The catalog tools named just after any of ``triggers`` ("except create tickets and echo")."""
    names: list[str] = []
    used: set[int] = set()
    for i, token in enumerate(tokens):
        if token.low not in triggers or i in skip:
            continue
        j = i + 1
        while j < len(tokens) and tokens[j].low in _RESTRICTING:  # "can only create tickets"
            j += 1
        while j < len(tokens):
            hit = _tool_named_by(tokens, range(j, min(j + 4, len(tokens))), skip | used, catalog)
            if hit is None:
                break
            names.append(hit[0])
            used |= hit[1] | {i}
            j = max(hit[1]) + 1
            if j < len(tokens) and tokens[j].low in ("and", "or", ","):
                j += 1
            else:
                break
    return (names, used) if names else None


def _source_names(flow: Flow) -> dict[tuple[str, ...], str]:
    """The words of each source's name that is more than a namespace word (``("demo", "tools")``)
    → its namespace: a name of two words or more, or one that differs from its namespace."""
    out: dict[tuple[str, ...], str] = {}
    for source in flow.world.sources or []:
        if source.status == "disconnected":
            continue
        words = tuple(w for w in re.split(r"[^a-z0-9]+", source.name.lower()) if w)
        if words and (len(words) > 1 or words[0] != source.namespace.lower()):
            out[words] = source.namespace
    return out


def _named_source_at(words: list[str], i: int, named: dict[tuple[str, ...], str]) -> tuple[str, set[int]] | None:
    """The source whose whole name starts at word ``i`` (the longest; ``words``: the message's,
    "" where skipped), and the tokens it takes (with a following "tools", "tool", "ones" or
    "server"); a one-word name only when one of those follows it ("the clock tools", never a
    bare "clock")."""
    for name in sorted(named, key=len, reverse=True):
        end = i + len(name)
        if tuple(words[i:end]) != name:
            continue
        follows = end < len(words) and words[end] in ("tools", "tool", "ones", "server")
        if len(name) == 1 and not follows:
            continue
        return named[name], set(range(i, end + (1 if follows else 0)))
    return None


_NOT_TOOL_WORDS = frozenset({"the", "also", "too", "a", "an", "to", "its", "their", "our", "my", "tool", "tools"})


def tool_named_in(text: Text, skip: frozenset[int], catalog: list[Any]) -> str | None:
    """The one catalog tool that the words after a verb of using name ("who can *create tickets*",
    "which agent may *search the docs*"), or None."""
    tokens = text.tokens
    for i, token in enumerate(tokens):
        if token.low in _USING_OR_ABLE:  # (the verb may itself be skipped: "anyone" is an agent word)
            hit = _tool_named_by(tokens, range(i + 1, min(i + 5, len(tokens))), skip, catalog)
            if hit is not None:
                return hit[0]
    return None


_USING_OR_ABLE = frozenset("use uses call calls access see sees get gets can could may "
                           "to agent agents bot bots anyone anybody someone somebody".split())
"""Words a tool's name follows in "who can *create tickets*", "can any agent *create tickets*",
"is anyone able to *search docs*"."""


def _tool_named_by(tokens: list[Any], span: range, skip: set[int] | frozenset[int],
                   catalog: list[Any]) -> tuple[str, set[int]] | None:
    """The one catalog tool whose own name holds the most of the words in ``span`` ("search the
    docs" → search_docs), stopping at the first word that is in none; None if no tool or a tie."""
    own = {e.name: set(_name_words(e)) for e in catalog}
    every = set().union(*own.values()) if own else set()

    def in_name(low: str, words: set[str]) -> bool:
        return low in words or _singular(low) in words

    said: list[tuple[int, str]] = []
    for j in span:
        if j in skip or tokens[j].kind != "word":
            break
        low = tokens[j].low
        if low in _NOT_TOOL_WORDS:
            continue
        if not in_name(low, every):
            break
        said.append((j, low))
    if not said:
        return None
    scored = sorted(((sum(in_name(low, words) for _, low in said), name) for name, words in own.items()),
                    reverse=True)
    if scored[0][0] == 0 or (len(scored) > 1 and scored[1][0] == scored[0][0]):
        return None
    best = scored[0][1]
    return best, {j for j, low in said if in_name(low, own[best])}


def _name_words(entry: Any) -> list[str]:
    """The words of a catalog tool's own name ("get-sum" → get, sum)."""
    return re.split(r"[_\-.]", _original(entry.name, entry.app).lower())


def tool_named(entry: Any, words: list[str]) -> bool:
    """Whether every one of ``words`` ("echo", "tickets") is a word of the tool's own name."""
    own = _name_words(entry)
    return all(w in own or _singular(w) in own for w in words)


_TOOL_NOUNS = frozenset({"tools", "tool", "ones"})


def _topic_words(tokens: list[Any], skip: set[int] | frozenset[int]) -> list[int]:
    """Indices of the words just before "tools" ("the ticket and docs tools"), read back over
    "and" and commas."""
    found: list[int] = []
    for i, token in enumerate(tokens):
        if token.low not in _TOOL_NOUNS:
            continue
        j = i - 1
        while j >= 0 and (tokens[j].low in ("and", ",", "or") or
                          (tokens[j].kind == "word" and j not in skip and tokens[j].low not in STOPWORDS
                           and tokens[j].low not in FILLER)):
            if tokens[j].kind == "word" and tokens[j].low not in ("and", "or"):
                found.append(j)
            j -= 1
    return found


def _singular(word: str) -> str:
    return word[:-1] if len(word) > 3 and word.endswith("s") and not word.endswith("ss") else word


_RESTRICTING = frozenset({"only", "just", "solely"})
_MAY = frozenset({"can", "may", "could", "should"})
_NEGATIONS = frozenset({"not", "never", "cannot", "no"})
_EXCLUDING_WORDS = _NEGATIONS | frozenset({"except", "without"})
"""Before the tools a new agent must not use ("except create tickets", "cannot echo")."""
_EXCLUDING = _EXCLUDING_WORDS | {"but"}
_USING = frozenset({"use", "access", "call", "tools", "tool", "have", "get", "see"})


def _restricts_tools(flow: Flow, state: State) -> bool:
    """The request limits the agent's tools ("that can only use the ticket tools", "limited to
    …"): an allowlist it did not name in a way that could be read is asked for, never dropped."""
    words = [t.low for t in flow.text.tokens]
    for i, word in enumerate(words):
        after = words[i + 1:i + 4]
        if word in _RESTRICTING and (_USING & set(after) or _tool_words_at(flow, i + 1)):
            return True  # "that can only use the ticket tools", "that can only create tickets"
        if word in ("limited", "restricted") and after[:1] == ["to"]:
            return True
        if word in _EXCLUDING and i > 0 and (_USING & set(after) or _tool_words_at(flow, i + 1)):
            return True  # "… but not create tickets", "everything except the ticket tools": never all of them
    return False


def _tool_words_at(flow: Flow, i: int) -> bool:
    """A catalog tool is named by the words from ``i`` ("create tickets")."""
    catalog = flow.world.catalog.tools if flow.world.catalog else []
    tokens = flow.text.tokens
    return bool(catalog) and _tool_named_by(tokens, range(i, min(i + 4, len(tokens))), frozenset(), catalog) is not None


def _ask_agent_tools(state: State, flow: Flow) -> str:
    catalog = flow.world.catalog
    offered = ", ".join(t.name for t in catalog.tools[:8]) if catalog and catalog.tools else ""
    more = f" (and {len(catalog.tools) - 8} more)" if catalog and len(catalog.tools) > 8 else ""
    lead = "Which tools should it be able to use? Give their names or globs, for example demo_*"
    return f"{lead}. This sandbox offers: {offered}{more}." if offered else lead + "."


_ADD_WORDS = frozenset("also too additionally add adding plus extra more".split())
_GRANTING = frozenset("give grant let allow enable".split())
_USING_VERBS = frozenset("use able allowed call access".split())
"""With a "not": the tools named are taken away ("may not call", "shouldn't be allowed to use")."""
_NARROWING = _RESTRICTING | frozenset("restrict restricted limit limited".split())
_ALL_WORDS = frozenset("everything anything all every".split())


def _access_mode(ctx: Ctx) -> ex.Found | None:
    """How an agent's allowlist changes: ``all`` tools, ``add`` to it, ``remove`` from it, or ``set``."""
    words = {t.low for t in ctx.text.tokens}
    if words & _ALL_WORDS and not any("_" in w or "*" in w for w in words):
        return ex.Found("all", frozenset())
    if words & {"longer", "stop", "remove", "away", "revoke", "drop", "lose"} or \
            "not" in words and words & _USING_VERBS:
        return ex.Found("remove", frozenset())
    if words & _ADD_WORDS or phrase("as well").find(ctx.text) is not None:
        return ex.Found("add", frozenset())
    if words & _GRANTING and not words & _NARROWING:  # "give X access to Y": Y as well, never Y alone
        return ex.Found("add", frozenset())
    if "able" in words and not words & _RESTRICTING:  # "X should be able to search docs": one more, not only
        return ex.Found("add", frozenset())
    return None


def _sandbox_name(ctx: Ctx) -> ex.Found | None:
    found = ex.label(ctx.text)
    if found is not None:
        return found
    tokens = ctx.text.tokens
    for i, token in enumerate(tokens):
        if token.low not in ("sandbox", "workspace"):
            continue
        for j in (i + 1, i - 1):  # "sandbox qa", "a qa sandbox"
            if not 0 <= j < len(tokens):
                continue
            word = tokens[j]
            if word.kind == "word" and word.low not in STOPWORDS | FILLER | _NOT_SANDBOX_NAMES and \
                    re.fullmatch(r"[A-Za-z0-9_-]+", word.text):
                return ex.Found(word.text, frozenset({i, j}))
    return None


_NOT_SANDBOX_NAMES = frozenset("new another create make add called named set up fresh empty separate".split())


def _existing_sandbox(ctx: Ctx) -> ex.Found | None:
    found = ex.sandbox_mention(ctx.text, ctx.state.sandboxes)
    if found is not None:
        return found
    names = {s.lower(): s for s in ctx.state.sandboxes}
    for i, token in enumerate(ctx.text.tokens):
        if i not in ctx.skip and token.low in names:
            return ex.Found(names[token.low], frozenset({i}))
    return None


def unknown_sandbox(ctx: Ctx) -> ex.Found | None:
    """A word where a sandbox's name would be, that is not one ("go to sandbox dev")."""
    tokens = ctx.text.tokens
    for i, token in enumerate(tokens):
        if token.low in ("sandbox", "workspace"):
            for j in (i + 1, i - 1):
                if 0 <= j < len(tokens) and tokens[j].kind == "word" and \
                        tokens[j].low not in STOPWORDS | FILLER | {"to", "switch", "use", "change", "go"}:
                    return ex.Found(tokens[j].text, frozenset({i, j}))
    return None


# --------------------------------------------------------------------------------------------
# Questions


def _ask_url(state: State, flow: Flow) -> str:
    if flow.notice:
        return "What's the server's https:// URL?"
    return "What's the URL of your MCP server? (for example https://mcp.example.com/mcp)"


_CALLED_BY_KIND = re.compile(
    r"(?i)\b(?:my|our|the|a|an)\s+([a-z][\w-]{1,30})(?:['\u2019]s)?\s+(?:mcp\s+)?"
    r"(?:server|service|source|integration)\b")
"""How a request names the server by what it is: "hook up my everything server", "our team's
MCP server"."""


_WHICH_ONE = frozenset("new another different other old current existing first second third fourth last next "
                       "previous extra additional".split())
"""Words that say which server, not what it is called ("hook up a *second* server")."""


def name_in_request(text: str) -> str | None:
    """The label a request already gives its server ("my *everything* server"), or None."""
    for match in _CALLED_BY_KIND.finditer(text):
        word = match.group(1).lower()
        if word not in GENERIC | STOPWORDS | FILLER | _WHICH_ONE | {"own", "local", "remote", "http", "https", "stdio",
                                                                  "sse", "streamable"}:
            return match.group(1)
    return None


def suggested_label(flow: Flow) -> str:
    """The label offered when asking for one: what the request called the server, else a
    word from its URL's host."""
    return name_in_request(flow.text.raw) or default_label(flow.slots.get("url", ""), flow.slots.get("command"))


def _ask_name(state: State, flow: Flow) -> str:
    default = suggested_label(flow)
    return f'What should I call it? Give a short label, or say "ok" for "{default}".'


def _ask_sandbox(state: State, flow: Flow) -> str:
    return (f"Which sandbox should it go in? You have: {', '.join(state.sandboxes)} "
            f"(current: {state.sandbox}).")


def _ask_auth(state: State, flow: Flow) -> str:
    """The auth question; a request that said "basic auth" first hears that it is not one of them."""
    basic = any(t.low == "basic" for t in flow.text.tokens)
    return (("Basic authentication (a user name and password) isn't supported. " if basic else "")
            + "How does it authenticate: with a bearer token, a token in a custom header, or none?")


def _fixed(text: str) -> Callable[[State, Flow], str]:
    return lambda state, flow: text


def _needs_sandbox(flow: Flow, state: State) -> bool:
    return len(state.sandboxes) > 1


def _is_header(flow: Flow, state: State) -> bool:
    return flow.slots.get("auth_kind") == "header_token"


def _update_needs_header(flow: Flow, state: State) -> bool:
    if flow.slots.get("auth_kind") != "header_token":
        return False
    current = flow.target.data if flow.target is not None else None
    return getattr(current, "scheme", None) != "header_token"


# --------------------------------------------------------------------------------------------
# The forms


_TARGET_ONLY = ()

FORMS: dict[str, Form] = {f.name: f for f in (
    Form("register", "register_source", (
        Slot("command", _command, None, None, required_if=lambda flow, state: False),
        Slot("url", _url, _ask_url, _url, registry_field("base_url"), required_if=_no_url_for_a_program),
        Slot("name", _label, _ask_name, _label_answer, registry_field("name")),
        Slot("auth_kind", _auth, _ask_auth, _auth, required_if=_auth_needed),
        Slot("auth_header", _header, _fixed("Which header carries the token? (for example X-Api-Key)"),
             _header, registry_field("auth_header"), required_if=_is_header),
        Slot("sandbox", _sandbox, _ask_sandbox, _sandbox_answer, required_if=_needs_sandbox),
        Slot("app_namespace", _namespace, _fixed("What namespace should it use instead? (letters, "
                                                 "digits, _ or -)"), _namespace_answer, _check_namespace,
             required_if=lambda flow, state: False),
        Slot("rate_cap_per_minute", _rate, _fixed("What rate cap should it have, in tool calls per minute?"),
             _number_answer, registry_field("rate_cap_per_minute"),
             required_if=lambda flow, state: False),
        Slot("allowed_tools", _allowed, None, None, registry_field("allowed_tools"),
             required_if=lambda flow, state: False),
        Slot("token_ref", _ref, None, None, required_if=lambda flow, state: False),
    ), asks=("url", "auth_kind", "auth_header", "name", "sandbox", "app_namespace", "rate_cap_per_minute")),
    Form("update", "update_source", (
        Slot("name", _new_name, _fixed("What should the new name be?"), _new_name_answer,
             registry_field("name"), aspect="name"),
        Slot("url", _url, _fixed("What's the new URL?"), _url, registry_field("base_url"), aspect="url"),
        Slot("auth_kind", _update_auth, _fixed("Which auth scheme should it use now: a bearer token, a "
                                               "token in a custom header, or none?"), _update_auth,
             aspect="auth"),
        Slot("auth_header", _header, _fixed("Which header carries the token? (for example X-Api-Key)"),
             _header, registry_field("auth_header"), required_if=_update_needs_header, aspect="auth"),
        Slot("rotate_token", _true_for("token"), None, None, required_if=lambda f, s: False, aspect="token"),
        Slot("token_ref", _ref, None, None, required_if=lambda f, s: False),
        Slot("rate_cap_per_minute", _rate, _fixed("What should its rate cap be, in tool calls per minute?"),
             _number_answer, registry_field("rate_cap_per_minute"), aspect="rate_cap"),
        Slot("call_timeout", _call_timeout, _fixed("How many seconds may one tool call take? (up to 600; "
                                                   "the default is 60)"), _seconds_answer,
             _timeout_check("call_timeout", "a tool call", 600), required_if=_call_timeout_needed,
             aspect="timeout"),
        Slot("connect_timeout", _connect_timeout, None, None, _timeout_check("connect_timeout", "connecting", 120),
             required_if=lambda f, s: False, aspect="timeout"),
        Slot("allowed_tools", _source_allowlist, _fixed("Which tools should it offer? (their names, "
                                                        "for example search_docs, echo)"),
             _source_allowlist, registry_field("allowed_tools"), aspect="allowlist"),
        Slot("allow_all_tools", _true_for("allow_all"), None, None, required_if=lambda f, s: False,
             aspect="allow_all"),
        Slot("app_namespace", _namespace, _fixed("What should the new namespace be?"), _namespace_answer,
             _check_namespace, aspect="namespace"),
    ), asks=("name", "url", "auth_kind", "auth_header", "rate_cap_per_minute", "allowed_tools",
             "app_namespace"), target="source"),
    Form("test", "test_source", _TARGET_ONLY, target="source"),
    Form("show", "show_source", _TARGET_ONLY, target="source"),
    Form("pause", "pause_source", _TARGET_ONLY, target="source"),
    Form("resume", "resume_source", _TARGET_ONLY, target="source"),
    Form("revoke", "revoke_source", _TARGET_ONLY, target="source"),
    Form("approve", "accept_tool_changes", _TARGET_ONLY, target="source"),
    Form("delete", "delete_source_command", _TARGET_ONLY, target="source"),
    Form("catalog", "list_agent_tools", ()),
    Form("who_uses", "list_agents", ()),
    Form("describe", "describe_tool", ()),
    Form("create_agent", "create_agent", (
        Slot("slug", _agent_slug, _fixed("What should the agent be called? (a short name like "
                                         "support-bot)"), _slug_answer, _agent_field("slug")),
        Slot("name", _agent_display_name, None, None, required_if=lambda f, s: False),
        Slot("tool_allowlist", _agent_allowlist, _ask_agent_tools, _agent_allowlist, _agent_field("tool_allowlist"),
             required_if=_restricts_tools),
    ), asks=("slug", "tool_allowlist")),
    Form("agent_access", "update_agent", (
        Slot("tool_allowlist", _agent_allowlist, _fixed("Which tools should it be able to use? (catalog "
                                                        "names or globs, for example demo_*)"),
             _agent_allowlist, _agent_field("tool_allowlist")),
        Slot("mode", _access_mode, None, None, required_if=lambda f, s: False),
    ), asks=("tool_allowlist",)),
    Form("switch_sandbox", "switch_sandbox", (
        Slot("sandbox", _existing_sandbox, lambda state, flow: (
            f"Which sandbox? You have: {', '.join(state.sandboxes)} (current: {state.sandbox})."),
            _sandbox_answer),
    ), asks=("sandbox",)),
    Form("create_sandbox", "create_sandbox", (
        Slot("name", _sandbox_name, _fixed("What should the new sandbox be called? (letters, digits, "
                                           "_ and -)"), _sandbox_name_answer),
    ), asks=("name",)),
)}
"""Every form by name."""

UNREADABLE: dict[str, str] = {
    "url": "I need the server's address, starting with https:// (or http://localhost for a server "
           "on this machine).",
    "auth_kind": "Please answer bearer, header or none.",
    "sandbox": "That isn't one of your sandboxes.",
    "rate_cap_per_minute": "Please give a number of calls per minute.",
    "auth_header": "That doesn't look like a header name.",
}
"""Said when an answer to a question could not be read."""


def fill(state: State, flow: Flow, text: Text, skip: frozenset[int] = frozenset(), *,
         answering: str | None = None) -> tuple[bool, frozenset[int]]:
    """Apply one message to ``flow``: every slot it states is (re)set, after validation.

    Values are read first; only when the message states none is it read as a bare answer to
    the open question (so "wait, it has no auth" corrects the auth, it is not a name).
    Returns whether anything changed, and ``skip`` plus the token indices the values used.
    """
    form = FORMS[flow.form]
    before = set(flow.aspects)
    if flow.form == "update":
        flow.aspects = tidy_aspects(flow.aspects | update_aspects(text, state))
        if answering == "change":
            flow.aspects |= {ASPECT_WORDS[t.low] for t in text.tokens if t.low in ASPECT_WORDS}
    used: set[int] = set()
    changed = flow.aspects != before
    for bare in (False, True):
        for slot in form.slots:
            if bare and (answering != slot.name or slot.answer is None):
                continue
            if slot.aspect is not None and slot.aspect not in flow.aspects and answering != slot.name:
                if not (slot.name == "auth_header" and flow.slots.get("auth_kind") == "header_token"):
                    continue
            ctx = Ctx(text, frozenset(used), state, flow, answering=answering == slot.name)
            found = slot.answer(ctx) if bare and slot.answer else slot.extract(ctx)
            if found is None:
                continue
            now = _set(flow, state, slot, found.value)
            if now and slot.name == "token_ref" and answering not in (None, "token_ref") and not flow.notice:
                # a token given where another question was asked
                flow.notice = TOKEN_UNUSED if flow.slots.get("auth_kind") == "none" else TOKEN_TAKEN
            changed |= now
            used |= found.used
        if changed:
            break
    return changed, frozenset(used) | skip


TOKEN_TAKEN = "Thanks, I have the token (it is never shown, nor stored in clear)."
TOKEN_UNUSED = ("That looks like a token, so I kept it hidden. You said the server needs no authentication, so it "
                'won\'t be sent; say "it uses a bearer token" if it should be.')


def _set(flow: Flow, state: State, slot: Slot, value: Any) -> bool:
    if slot.validate is not None:
        value, error = slot.validate(value, flow, state)
        if error:
            flow.notice = error
            flow.slots.pop(slot.name, None)
            flow.refused.add(slot.name)  # asked again, with the registry's reason
            return True
    flow.refused.discard(slot.name)
    if flow.slots.get(slot.name) == value:
        return False
    flow.slots[slot.name] = value
    return True


def update_aspects(text: Text, state: State) -> set[str]:
    """Which parts of a source a message talks about changing."""
    aspects = {h.intent.aspect for h in classify(text, sandboxes=state.sandboxes)
               if h.intent.does == "form:update" and h.intent.aspect}
    if text.urls and ("url" in aspects or "auth" in aspects or not aspects):
        aspects.add("url")
    tokens = [ref for ref in text.refs if ref not in _refs_in_urls(text)] if text.refs else []  # not a URL's key
    if ("url" in aspects or tokens) and ex.auth_kind(text) is not None:
        aspects.add("auth")  # "moved to https://… and uses a bearer token now"
    if tokens and "auth" not in aspects:
        aspects.add("token")
    return tidy_aspects(aspects)


def tidy_aspects(aspects: set[str]) -> set[str]:
    """"Allow all tools again" is not also a new allowlist."""
    if "allow_all" in aspects:
        aspects = aspects - {"allowlist"}
    return aspects
