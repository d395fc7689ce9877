"""Slot extractors: each reads one kind of fact from a message, wherever it is said.

Every extractor returns the value and the token indices it used (so those words are never
also read as a source's name), or None. They read `Text` tokens, never the raw string, so
nothing inside a URL or a secret reference is ever taken for a word.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from concierge.agent.models.offline.text import Text, phrase
from concierge.agent.models.offline.vocabulary import (
    AUTH_PHRASES,
    CANCEL,
    COMMAND_LEADS,
    CORRECTION,
    FILLER,
    LAUNCHERS,
    STOP_BEFORE_LABEL,
    STOPWORDS,
    yes_or_no,
)

__all__ = [
    "Found",
    "agent_name",
    "auth_kind",
    "command",
    "header_name",
    "is_cancel",
    "is_correction",
    "label",
    "namespace",
    "new_name",
    "rate_cap",
    "sandbox_mention",
    "slugify",
    "tool_names",
    "urls",
    "yes_no",
]

_HEADER_RE = re.compile(r"^[A-Za-z][A-Za-z0-9]*(?:-[A-Za-z0-9]+)+$|^[Xx][A-Za-z0-9]+$")
_KNOWN_HEADERS = {"authorization", "apikey", "api-key", "x-api-key", "x-auth-token", "private-token",
                  "x-token", "x-access-token", "x-api-token", "x-key"}
_VALUE_WORDS = {"token", "bearer", "key", "secret", "password", "is", "value", "credential"}
# Punctuation between two tokens that ends a label or a list.
_BREAK_RE = re.compile(r"[,;.!?()\[\]—–]|\s-\s")


@dataclass(frozen=True)
class Found:
    value: object
    used: frozenset[int]


def _gap(text: Text, a: int, b: int) -> str:
    return text.raw[text.tokens[a].end:text.tokens[b].start]


def _run(text: Text, start: int, *, stop: frozenset[str] = STOP_BEFORE_LABEL, limit: int = 6) -> list[int]:
    """Token indices from ``start`` up to a stop word, punctuation, a URL or the end."""
    out: list[int] = []
    for j in range(start, min(len(text.tokens), start + limit)):
        token = text.tokens[j]
        if token.kind in ("url", "ref") or (out and _BREAK_RE.search(_gap(text, out[-1], j))):
            break
        if token.low in stop and out:
            break
        if token.low in stop and not out and not text.is_capitalized(j):
            break  # "call it with no auth" has no label; "call it Sandbox docs" has one
        out.append(j)
    return out


def _quoted_at(text: Text, index: int) -> tuple[str, frozenset[int]] | None:
    """A quoted value starting at token ``index`` ("call it "Acme docs"")."""
    if index >= len(text.tokens):
        return None
    start = text.tokens[index].start
    for value, qs, qe in text.quoted:
        if qs <= start < qe or (0 <= qs - start <= 1):
            used = frozenset(i for i, t in enumerate(text.tokens) if qs <= t.start and t.end <= qe)
            return value, used
    return None


def urls(text: Text) -> list[str]:
    """The message's URLs, with ``http://`` added to a bare ``localhost:PORT``; a server "on
    localhost port 8000" (or "on port 8000") is ``http://localhost:8000/mcp``, the usual path."""
    out = []
    for url in text.urls:
        if "://" not in url:  # "localhost:8000/mcp"
            url = "http://" + url
        out.append(url)
    if not out:
        tokens = text.tokens
        for j, token in enumerate(tokens):
            if token.kind != "num" or not 1024 <= int(token.low) <= 65535:
                continue
            before = [t.low for t in tokens[max(0, j - 3):j]]
            if before[-1:] == ["port"] or (before[-1:] in (["localhost"], ["on"]) and (
                    "localhost" in before or "port" in before or before[-1:] == ["on"])):
                after = tokens[j + 1].low if j + 1 < len(tokens) else ""
                if after not in ("calls", "requests", "per", "a", "rpm", "min", "minute"):
                    out.append(f"http://localhost:{token.low}/mcp")
                    break
    return out


_NOT_LABELS = frozenset({"it", "this", "that", "ok", "okay", "soon", "well", "possible", "a", "an", "the"})
_LABEL_TRIGGERS = ("call it", "name it", "label it as", "label it", "call this", "name this",
                   "named", "called", "label", "labelled", "labeled", "name")


def label(text: Text, *, allow_as: bool = False) -> Found | None:
    """The label given to a new source: "call it X", "named X", "name: X" (and "as X" when
    registering)."""
    triggers = _LABEL_TRIGGERS + (("as",) if allow_as else ())
    for trigger in triggers:
        found = phrase(trigger).find(text)
        if found is None:
            continue
        # Adjacent words only ("call it", not "call ... it").
        if len(found) > 1 and found[-1] - found[0] != len(found) - 1:
            continue
        after = found[-1] + 1
        if trigger == "name" and after < len(text.tokens) and text.tokens[after].low in ("it", "this"):
            continue
        quoted = _quoted_at(text, after)
        if quoted is not None:
            return Found(quoted[0], frozenset(found) | quoted[1])
        run = _run(text, after)
        if trigger == "as" and run and text.tokens[run[0]].low in ("soon", "well", "possible", "a", "an"):
            continue
        if not run:
            continue
        value = text.span_text(run[0], run[-1]).strip(" \"'“”`")
        if value and value.lower() not in _NOT_LABELS:
            return Found(value[:200], frozenset(found) | frozenset(run))
    return None


def auth_kind(text: Text, skip: frozenset[int] = frozenset(), *, answering: bool = False) -> Found | None:
    """The auth scheme the message names: none, header_token or bearer (checked in that order)."""
    if text.refs and not answering:
        pass  # a pasted credential means some scheme; which one is still read from the words
    for kind in ("none", "header_token", "oauth", "bearer"):
        if kind == "oauth" and (phrase("oauth token").find(text, skip) is not None
                                or phrase("oauth access token").find(text, skip) is not None):
            continue  # a token they hold, from an OAuth app: a bearer token
        best: tuple[int, ...] | None = None
        for source in AUTH_PHRASES[kind]:
            if kind == "none" and source in ("nothing", "open", "none") and not answering and \
                    not _auth_context(text):
                continue
            found = phrase(source).find(text, skip)
            if found is not None and (len(found) == 1 or found[-1] - found[0] < len(found) + 2):
                if best is None or len(found) > len(best):
                    best = found
        if best is not None:
            if kind == "none" and text.refs:
                continue  # "no auth" and a credential in one breath: the credential wins
            return Found(kind, frozenset(best))
    if answering:
        answer = yes_or_no(text.raw)
        if answer is False:
            return Found("none", frozenset(range(len(text.tokens))))
    if text.refs and any(t.low in ("token", "key", "bearer") for t in text.tokens):
        return Found("bearer", frozenset())
    return None


_BACKTICKS = re.compile(r"`([^`\n]{1,500})`")
_QUOTED_COMMAND = re.compile(r"[\"“']([^\"“”'\n]{1,500})[\"”']")


_NOT_AN_ARGUMENT = r"(?!(?:and|with|call|called|name|named|as|in|no|please|then|it)\b)"
_BARE_COMMAND = re.compile(
    r"(?:^|\s)((?:uvx|npx|bunx|pipx run|python3? -m|docker run)"
    r"(?:\s+-{1,2}[^\s,;]+)*"  # the launcher's own flags ("npx -y")
    r"\s+" + _NOT_AN_ARGUMENT + r"[^\s,;]+"  # the package or module
    r"(?:\s+-{1,2}[^\s,;]+(?:\s+" + _NOT_AN_ARGUMENT + r"[^\s,;-][^\s,;]*)?)*)")  # its flags, with values
"""A command line with no words before it: "add npx -y @modelcontextprotocol/server-everything"."""


def command(text: Text) -> Found | None:
    """A command line that starts a local MCP server: in backticks, quoted, or after "runs
    with"/"command" and starting with a launcher (uvx, npx, python, node, docker, ...)."""
    candidates: list[tuple[int, int, str]] = [(m.start(1), m.end(1), m.group(1)) for m in _BACKTICKS.finditer(text.raw)]
    candidates += [(m.start(1), m.end(1), m.group(1)) for m in _QUOTED_COMMAND.finditer(text.raw)
                   if m.group(1).split()[:1] and m.group(1).split()[0].lower() in LAUNCHERS]
    if not candidates:
        low = text.raw.lower()
        for lead in sorted(COMMAND_LEADS, key=len, reverse=True):
            at = re.search(rf"\b{re.escape(lead)}\s+", low)
            if at is None:
                continue
            rest = text.raw[at.end():]
            first = rest.split()[:1]
            if first and first[0].lower().strip(",.;") in LAUNCHERS:
                stop = re.search(r"[,;]|\s(?:and|with|call|called|name|named|as|in|no|please)\b|\.(?:\s|$)", rest)
                line = rest[: stop.start()] if stop else rest
                candidates.append((at.end(), at.end() + len(line), line.strip().rstrip(".")))
                break
        if not candidates:
            m = _BARE_COMMAND.search(text.raw)
            if m:
                candidates.append((m.start(1), m.end(1), m.group(1)))
    for start, end, line in candidates:
        words = line.split()
        if words and "://" not in words[0] and not words[0].startswith("sec_"):
            used = frozenset(i for i, t in enumerate(text.tokens) if t.start < end and t.end > start)
            return Found(" ".join(words), used)
    return None


def _auth_context(text: Text) -> bool:
    """Words that make "open", "none" or "nothing" talk about authentication."""
    return any(t.low in ("auth", "authentication", "public", "token", "no", "it", "is", "its", "none")
               for t in text.tokens)


def header_name(text: Text, *, answering: bool = False) -> Found | None:
    """The header that carries the token: "header X-Api-Key", "in the X-Api-Key header",
    "a header called X-Foo"; when asked, a bare header-like word. Never the word after
    "token" or "bearer" (that is a credential), never a secret reference."""
    tokens = text.tokens
    for i, token in enumerate(tokens):
        if token.low != "header" and token.low != "headers":
            continue
        for j in (i + 1, i + 2, i - 1):
            if 0 <= j < len(tokens) and _header_like(text, j, near_header=True):
                if j == i + 2 and tokens[i + 1].low not in ("called", "named", "is", "name"):
                    continue
                return Found(tokens[j].text, frozenset({i, j}))
    for j in range(len(tokens)):
        if _header_like(text, j, near_header=False):
            return Found(tokens[j].text, frozenset({j}))
    if answering and len(tokens) == 1 and tokens[0].kind == "word" and re.fullmatch(
            r"[A-Za-z][A-Za-z0-9-]*", tokens[0].text):
        return Found(tokens[0].text, frozenset({0}))
    return None


def _header_like(text: Text, j: int, *, near_header: bool) -> bool:
    token = text.tokens[j]
    after = text.tokens[j + 1] if j + 1 < len(text.tokens) else None
    named_then_valued = after is not None and (after.kind == "ref" or after.low in ("value", "with", "header")) \
        and token.text.lower().startswith("x-") and bool(_HEADER_RE.match(token.text))
    if token.kind != "word" or (j > 0 and text.tokens[j - 1].low in _VALUE_WORDS - {"is"}
                                and not named_then_valued):  # "a header token X-GitHub-Key value …"
        return False
    word = token.text
    if word.lower() in ("header", "custom", "a", "the", "called", "named", "token", "auth", "key", "in",
                        "with", "and", "is", "for"):
        return False
    if word.lower().startswith("x-") and _HEADER_RE.match(word):
        return True
    return near_header and (word.lower() in _KNOWN_HEADERS or bool(_HEADER_RE.match(word))) and \
        word.lower() not in STOPWORDS


def _number_after(text: Text, start: int, within: int = 5) -> int | None:
    for j in range(start, min(len(text.tokens), start + within)):
        if text.tokens[j].kind == "num":
            return j
        if text.tokens[j].kind in ("url", "ref"):
            return None
    return None


def rate_cap(text: Text) -> Found | None:
    """Calls per minute: "rate cap 30", "30 calls per minute", "max 200 a minute", "90/min"."""
    tokens = text.tokens
    for source in ("rate cap", "rate limit", "rate", "cap", "limit", "max", "maximum", "at most",
                   "throttle"):
        found = phrase(source).find(text)
        if found is None:
            continue
        j = _number_after(text, found[-1] + 1)
        if j is not None:
            return Found(int(tokens[j].low), frozenset((*found, j)))
    for j, token in enumerate(tokens):
        if token.kind != "num":
            continue
        after = [t.low for t in tokens[j + 1:j + 4]]
        if after[:1] and after[0] in ("rpm", "min", "minute") or (
                after[:1] and after[0] in ("calls", "requests", "call", "request", "times", "per", "a", "every")
                and any(w in ("minute", "min", "minutes") for w in after)):
            return Found(int(token.low), frozenset({j}))
    return None


_NAMESPACE_FILLER = frozenset({"to", "is", "of", "as", "be", "should", "the", "tool", "just", "simply", "please",
                               "now", "instead", "rather", "set", "become", "called", "named", "could", "can"})


def namespace(text: Text) -> Found | None:
    """"namespace acme", "with the prefix acme", "namespace: acme", "can the namespace just be
    acme?", "use acme as the namespace"."""
    tokens = text.tokens
    for i, token in enumerate(tokens):
        if token.low in ("namespace", "prefix"):
            for j in range(i + 1, min(i + 5, len(tokens))):
                nxt = tokens[j]
                if nxt.low in _NAMESPACE_FILLER:
                    continue
                if nxt.kind == "word" and re.fullmatch(r"[A-Za-z0-9_-]{1,64}", nxt.text):
                    return Found(nxt.text, frozenset({i, j}))
                break
            # "acme as the namespace": the word before "as"
            k = i - 1
            while k >= 0 and tokens[k].low in ("the", "a", "its"):
                k -= 1
            if k >= 1 and tokens[k].low == "as" and tokens[k - 1].kind == "word" and \
                    re.fullmatch(r"[A-Za-z0-9_-]{1,64}", tokens[k - 1].text) and tokens[k - 1].low not in _NAMESPACE_FILLER:
                return Found(tokens[k - 1].text, frozenset({i, k - 1}))
    return None


def sandbox_mention(text: Text, sandboxes: tuple[str, ...]) -> Found | None:
    """A known sandbox the message names: "in staging", "to the prod sandbox", "sandbox qa"."""
    names = {s.lower(): s for s in sandboxes}
    tokens = text.tokens
    said_sandbox = any(t.low in ("sandbox", "workspace", "sandboxes") for t in tokens)
    for j, token in enumerate(tokens):
        if token.low not in names:
            continue
        before = tokens[j - 1].low if j else ""
        before2 = tokens[j - 2].low if j > 1 else ""
        after = tokens[j + 1].low if j + 1 < len(tokens) else ""
        if after in ("sandbox", "workspace") or before in ("sandbox", "workspace") or \
                before in ("in", "into", "to", "use", "from") or \
                (before in ("the", "my") and before2 in ("in", "into", "to", "use")) or said_sandbox:
            used = {j} | ({j + 1} if after in ("sandbox", "workspace") else set())
            return Found(names[token.low], frozenset(used))
    return None


def tool_names(text: Text, known: dict[str, str] | None = None, skip: frozenset[int] = frozenset()) -> Found | None:
    """Tool names in the message, in order: words like ``search_docs`` or ``demo_*``, and, when
    ``known`` maps lower-cased names to their spelling, known names (also "search docs")."""
    known = known or {}
    tokens = text.tokens
    out: list[str] = []
    used: set[int] = set()
    j = 0
    while j < len(tokens):
        token = tokens[j]
        if j in skip or token.kind != "word":
            j += 1
            continue
        if j + 1 < len(tokens) and tokens[j + 1].kind == "word" and \
                f"{token.low}_{tokens[j + 1].low}" in known and token.low not in known:
            out.append(known[f"{token.low}_{tokens[j + 1].low}"])
            used |= {j, j + 1}
            j += 2
            continue
        if token.low in known:
            out.append(known[token.low])
            used.add(j)
        elif ("_" in token.low or "*" in token.low) and re.fullmatch(r"[A-Za-z0-9_.*?\-\[\]]+", token.text):
            out.append(token.text)
            used.add(j)
        j += 1
    unique = list(dict.fromkeys(out))
    return Found(unique, frozenset(used)) if unique else None


_RENAME = (
    ("rename", "to|as"), ("re-name", "to|as"), ("relabel", "to|as"), ("change * name of", "to|as"),
    ("change * name", "to|as"), ("change * label", "to|as"), ("give * new name", ""),
    ("give * name", ""), ("call", "from now on"), ("name", "to"), ("should be called", "after"),
    ("be renamed", "to|as"),
)


def new_name(text: Text) -> Found | None:
    """The new label in a rename: "rename X to Y", "rename X -> Y", "call X Y from now on",
    "change X's name to Y", "give X a new name: Y". ``value`` is ``(new name, indices naming
    the source)``."""
    tokens = text.tokens
    head = phrase("rename").find(text)
    if head is not None:
        arrow = next((j for j in range(head[0] + 1, len(tokens))
                      if re.search(r"->|=>|→", _gap(text, j - 1, j))), None)
        if arrow is not None and arrow > head[0] + 1:
            run = _run(text, arrow, stop=frozenset({"and", "with", "please", "thanks", "then", "also"}))
            if run:
                value = text.span_text(run[0], run[-1]).strip(" \"'“”:")
                target = frozenset(range(head[0] + 1, arrow))
                return Found((value, target), frozenset(head) | frozenset(run) | target)
    for words, joint in _RENAME:
        found = phrase(words).find(text)
        if found is None:
            continue
        start = found[-1] + 1
        if joint == "from now on":
            tail = phrase("from now on").find(text)
            if tail is None or tail[0] <= start:
                continue
            middle = list(range(start, tail[0]))
            quoted = next(((v, s) for v, s, e in text.quoted if tokens[start].start <= s), None)
            if quoted is not None:
                value = quoted[0]
                value_idx = {i for i in middle if tokens[i].start >= quoted[1] - 1}
            elif len(middle) >= 2:
                value_idx = set(middle[1:]) if len(middle) > 1 else set(middle)
                value = text.span_text(min(value_idx), max(value_idx))
            else:
                continue
            target = frozenset(set(middle) - value_idx)
            return Found((value.strip(" \"'“”"), target), frozenset(found) | frozenset(middle) | frozenset(tail))
        if joint == "after":  # "legacy should be called Old API": the source comes first
            target = frozenset(range(0, found[0]))
            value_start = start
        elif joint:
            joiner = next((j for j in range(start, min(len(tokens), start + 6))
                           if tokens[j].low in joint.split("|")), None)
            if joiner is None:
                continue
            target = frozenset(range(start, joiner))
            value_start = joiner + 1
        else:
            target = frozenset(i for i in range(found[0] + 1, found[-1]) if i not in found)
            value_start = start
        at_value = _quoted_at(text, value_start)
        if at_value is not None:
            return Found((at_value[0], target), frozenset(found) | at_value[1] | target)
        run = _run(text, value_start, stop=frozenset({"and", "with", "please", "thanks", "then", "also"}))
        if run:
            value = text.span_text(run[0], run[-1]).strip(" \"'“”:")
            return Found((value, target), frozenset(found) | frozenset(run) | target)
    return None


def agent_name(text: Text) -> Found | None:
    """The agent a "create an agent …" request names: "agent called X", "agent X", a quoted name."""
    tokens = text.tokens
    for i, token in enumerate(tokens):
        if token.low not in ("agent", "bot"):
            continue
        j = i + 1
        if j < len(tokens) and tokens[j].low in ("called", "named", "name", "slug"):
            j += 1
        quoted = _quoted_at(text, j)
        if quoted is not None:
            return Found(quoted[0], frozenset({i}) | quoted[1])
        if j < len(tokens) and tokens[j].kind == "word" and tokens[j].low not in STOPWORDS | FILLER | {
                "that", "which", "with", "for", "who", "to"} and re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_-]*", tokens[j].text):
            return Found(tokens[j].text, frozenset({i, j}))
    for value, qs, qe in text.quoted:
        used = frozenset(k for k, t in enumerate(tokens) if qs <= t.start and t.end <= qe)
        return Found(value, used)
    return None


def slugify(name: str) -> str:
    """An agent slug from a name: "Night shift" -> night-shift."""
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")[:64] or "agent"


def yes_no(text: Text) -> bool | None:
    return yes_or_no(text.raw)


def is_cancel(text: Text) -> bool:
    """The whole message stops the current request ("never mind", "cancel", "forget it")."""
    words = [t.low for t in text.tokens if t.low not in FILLER or t.low in ("do", "not", "now")]
    joined = " ".join(w for w in words if w not in ("please", "thanks", "ok", "okay", "oh", "um"))
    joined = joined.strip()
    for lead in ("no ", "nah ", "nope ", "oh ", "um ", "hmm ", "ah ", "ok ", "okay ", "actually "):
        if joined.startswith(lead) and joined.removeprefix(lead).strip() in CANCEL:
            return True
    return joined in CANCEL or any(joined == f"{c} then" for c in CANCEL)


def is_correction(text: Text) -> bool:
    """The message corrects what was said ("actually, it's …", "sorry, I meant …")."""
    low = " ".join(t.low for t in text.tokens[:4])
    return any(low.startswith(c) or f" {c}" in f" {low}" for c in CORRECTION) or \
        (bool(text.tokens) and text.tokens[0].low == "no" and len(text.tokens) > 1)


_DURATION_RE = re.compile(r"(?i)^(\d+(?:\.\d+)?)(s|sec|secs|m|min|mins)?$")
_SECONDS_UNITS = frozenset({"s", "sec", "secs", "second", "seconds"})
_MINUTES_UNITS = frozenset({"m", "min", "mins", "minute", "minutes"})
_CONNECT_RE = re.compile(r"(?i)\bconnect(?:ion|ing)?\b")


def _duration_at(text: Text, j: int) -> float | None:
    """Seconds written at token ``j``: "30", "30 seconds", "2 minutes", "120s", "1.5 min"."""
    tokens = text.tokens
    match = _DURATION_RE.match(tokens[j].low)
    if match is None:
        return None
    value = float(match.group(1))
    unit = match.group(2) or (tokens[j + 1].low if j + 1 < len(tokens) else "")
    return value * 60 if unit in _MINUTES_UNITS else value


def timeout(text: Text, which: str) -> Found | None:
    """A source's ``call`` or ``connect`` timeout in seconds: "set the timeout to 30 seconds",
    "give it 2 minutes", "connect timeout 10". A message that says "connect" is about the
    connect timeout (unless it names the call timeout too, each with its own number)."""
    tokens = text.tokens
    durations = [j for j in range(len(tokens)) if tokens[j].kind in ("num", "word") and _duration_at(text, j)
                 is not None and not (tokens[j].kind == "word" and not any(c.isdigit() for c in tokens[j].low))]
    if not durations:
        return None
    connect_at = next((i for i, t in enumerate(tokens) if _CONNECT_RE.fullmatch(t.low)), None)
    call_at = next((i for i, t in enumerate(tokens) if t.low == "call" and i + 1 < len(tokens)
                    and tokens[i + 1].low in ("timeout", "time")), None)
    if which == "connect":
        if connect_at is None:
            return None
        after = [j for j in durations if j > connect_at and (call_at is None or j < call_at or call_at < connect_at)]
        j = after[0] if after else durations[0] if call_at is None else None
    else:
        if connect_at is not None and call_at is None:
            return None
        start = call_at if call_at is not None else 0
        after = [j for j in durations if j > start and (connect_at is None or j < connect_at or connect_at < start)]
        j = after[0] if after else None
        if j is None and connect_at is None:
            j = durations[0]
    if j is None:
        return None
    seconds = _duration_at(text, j)
    assert seconds is not None
    return Found(int(seconds) if seconds == int(seconds) else seconds, frozenset({j}))
