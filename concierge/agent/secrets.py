"""Credentials in a conversation: detect pasted ones, replace them by references, keep the values.

A person may paste a token into the chat ("the token is ghp_…", "Authorization: Bearer …").
`redact` finds such values and swaps each for a reference like ``[secret:sec_1a2b3c4d]``,
putting the value in a `SecretStore`. The reference is all the model, the history, the
transcript and the logs ever see; a tool that needs the credential gets the reference
(``token_ref``) and resolves it through the store at the last moment.

What counts as a credential (any one suffices):

- a value after a *cue* word — ``token``, ``key``, ``secret``, ``password``, ``bearer`` and
  their compounds (``bearer token``, ``api key``, ``X-Api-Key``, ``client secret``, …):
  after a strong link (``is``, ``:``, ``=``, ``will be``; ``the token for Demo is …``) any
  value that is not a plain stop word ("the token is required", "the key is in the vault")
  is one, whatever its length ("my key is abc"); right after the cue, or after ``to`` /
  ``as``, only a value shaped like a credential is (it has a digit: "with bearer token
  demo-token-123", "password hunter2"), so "rotate the token for Demo", "which key does it
  use", "bearer token auth" are left alone; so is a credential-shaped value in a later clause
  that names it ("we rotated the token, the new one is X", "it's now X", "changed it to X",
  "use X instead");
- a value after ``Authorization:`` (``Bearer``/``Basic``/``Token`` scheme optional);
- a query parameter whose name holds a credential word (``token=``, ``api_key=``,
  ``tavilyApiKey=``: `concierge.registry.url_secrets`), or ``with value X``;
- a well-known key prefix (``sk-``, ``ghp_``, ``github_pat_``, ``xoxb-``, ``AKIA``,
  ``glpat-``, ``AIza``, ``hf_``, ``sk_live_``, ``npm_``, JWTs, PEM private keys, …);
- a long, high-entropy word (≥ 24 characters mixing letters and digits), unless it is one of
  our own ids (``ds_…``), part of a URL's host or path, or already a reference.

`SecretStore` is a protocol (``put``/``get``/``delete``); `InMemorySecretStore` is the default,
and the HTTP layer supplies a vault-backed one so references survive a restart.
"""

from __future__ import annotations

import bisect
import math
import re
import secrets as _random
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

from concierge.url_secrets import CREDENTIAL_WORD, MASK

__all__ = [
    "InMemorySecretStore",
    "MASK",
    "REF_RE",
    "Redaction",
    "SecretStore",
    "find_secrets",
    "is_ref",
    "named_credential",
    "new_ref",
    "normalize_ref",
    "redact",
    "redact_all",
    "ref_text",
    "scrub",
]


REF_RE = re.compile(r"\[secret:(sec_[0-9a-f]{8,32})\]")
"""A reference as it appears in text."""
_BARE_REF_RE = re.compile(r"^\[?(?:secret:)?(sec_[0-9a-f]{8,32})\]?$")

_TOKEN_CHARS = r"[A-Za-z0-9._~+/=:\-]"

# (pattern, group holding the secret). Order matters only for readability: overlapping
# matches are merged. Values after cue words ("token is X") are found by `_cue_spans`.
_PATTERNS: list[tuple[re.Pattern[str], int]] = [
    # "header X-Api-Key with value X", "value: X" (only values mixing letters and digits).
    (re.compile(r"(?i)\b(?:with\s+(?:the\s+)?value|value\s*[:=]|value\s+is)\s*[\"'`]?"
                r"((?=[A-Za-z._~+/=:\-]*[0-9])(?=[0-9._~+/=:\-]*[A-Za-z])" + _TOKEN_CHARS + r"{8,})"), 1),
    # "send k-12345 in the X-Api-Key header" (only values mixing letters and digits).
    (re.compile(r"(?i)\bsend\s+[\"'`]?((?=[A-Za-z._~+/=:\-]*[0-9])(?=[0-9._~+/=:\-]*[A-Za-z])" + _TOKEN_CHARS
                + r"{6,})[\"'`]?\s+(?:in|as)\s+(?:the\s+|an?\s+)?(?:[A-Za-z]\w*(?:-\w+)+|authorization)\s+header\b"), 1),
    # "basic auth user:pass" (a user and a password joined by a colon).
    (re.compile(r"(?i)\bbasic(?:\s+auth(?:entication)?)?(?:\s+(?:with|using|of|is|=|:))?\s+[\"'`]?"
                r"([^\s:\"'`/]{1,128}:[^\s\"'`]{1,256})"), 1),
    # Query parameters.
    # Query parameters whose name holds a credential word ("?api_key=", "?tavilyApiKey=", "&X-Amz-Signature=").
    (re.compile(r"(?i)[?&][\w.~-]*?" + CREDENTIAL_WORD + r"[\w.~-]*=([^&\s#]{6,})"), 1),
    # Well-known prefixes.
    (re.compile(r"\b(sk-(?:proj-|ant-|live-)?[A-Za-z0-9_\-]{16,})"), 1),
    (re.compile(r"\b((?:ghp|gho|ghu|ghs|ghr)_[A-Za-z0-9]{20,})"), 1),
    (re.compile(r"\b(github_pat_[A-Za-z0-9_]{20,})"), 1),
    (re.compile(r"\b(xox[abprse]-[A-Za-z0-9\-]{10,})"), 1),
    (re.compile(r"\b((?:AKIA|ASIA)[0-9A-Z]{16})\b"), 1),
    (re.compile(r"\b(glpat-[A-Za-z0-9_\-]{20,})"), 1),
    (re.compile(r"\b(AIza[0-9A-Za-z_\-]{35})"), 1),
    (re.compile(r"\b(hf_[A-Za-z0-9]{30,})"), 1),
    (re.compile(r"\b((?:sk|pk|rk)_(?:live|test)_[A-Za-z0-9]{16,})"), 1),
    (re.compile(r"\b(npm_[A-Za-z0-9]{36})"), 1),
    (re.compile(r"\b(SG\.[A-Za-z0-9_\-]{16,}\.[A-Za-z0-9_\-]{16,})"), 1),
    (re.compile(r"\b(eyJ[A-Za-z0-9_\-]{8,}\.eyJ[A-Za-z0-9_\-]{8,}\.[A-Za-z0-9_\-]{8,})"), 1),
    (re.compile(r"(-----BEGIN [A-Z ]*PRIVATE KEY-----[\s\S]*?-----END [A-Z ]*PRIVATE KEY-----)"), 1),
]

# A cue word: what a credential is called. Compounds first, so "bearer token" is one cue.
_CUE_RE = re.compile(
    r"(?i)(?<![A-Za-z0-9_])(?:"
    r"(?:x-)?(?:(?:bearer|access|auth|api|refresh|session|secret|personal[ _-]access)[ _-]?)?token"
    r"|(?:x-)?(?:(?:api|access|secret|private|license|licence)[ _-]?)?key|apikey"
    r"|(?:client[ _-]?)?secret|password|passwd|pwd|pw|passphrase|passcode|credentials?|creds?|bearer|pat"
    r")(?![A-Za-z0-9_])")
# What follows a cue: an optional "for Demo" / "of the Acme server", a link, then the value
# (quoted, or one run of non-space characters).
_VALUE = r"(?:(?P<q>[\"'`])(?P<quoted>[^\"'`\n]{1,256})(?P=q)|(?P<bare>[^\s\"'`<>,;]{1,512}))"
_AFTER_CUE_RE = re.compile(
    r"(?i)(?P<link>\s*[:=]\s*|\s*->\s*|['’]s\s+|\s+(?:is|was|will\s+be|should\s+be|would\s+be|equals)\b\s*[:=]?\s*"
    r"|\s+(?:to|as)\s+|\s+)" + _VALUE)
_FOR_NAME = (  # " for Demo", " of the Acme server", " for demo tools": a source's name, up to three words
    r"\s+(?:for|of|on)\s+(?:the\s+|my\s+|our\s+)?[\"'`]?[\w.\-]+"
    r"(?:\s+(?!(?:is|was|to|as|will|should|would|equals|be)\b)[\w.\-]+){0,2}[\"'`]?(?:\s+(?:server|source))?")
_AFTER_CUE_FOR_RE = re.compile(  # "the token for Demo is X", "set the key of the Acme server to X"
    r"(?i)" + _FOR_NAME +
    r"(?P<link>\s*[:=]\s*|\s+(?:is|was|will\s+be|should\s+be|would\s+be|equals)\b\s*[:=]?\s*"
    r"|\s+(?:to|as)\s+)" + _VALUE)
_AFTER_CUE_ADVERB_RE = re.compile(  # "put the token back: X", "the key again = X" (a strong link only)
    r"(?i)\s+(?:back|again|here|now|then|instead|too|also|below)(?:" + _FOR_NAME + r")?"
    r"(?P<link>\s*[:=]\s*|\s*->\s*|\s+(?:is|was|will\s+be|should\s+be)\b\s*[:=]?\s*)" + _VALUE)
_AUTHORIZATION_RE = re.compile(
    r"(?i)\bauthorization(?P<link>\s*[:=]\s*)(?:(?:bearer|basic|token)\s+)?" + _VALUE)
_ANAPHORA_RE = re.compile(  # after a cue, a later clause naming the value: "…, the new one is X"
    r"(?i)(?<![A-Za-z0-9_])(?P<link>"
    r"(?:the\s+|a\s+)?(?:new|current|updated|fresh|latest|right|correct|real|actual|replacement)\s+one"
    r"(?:\s+(?:is|will\s+be|should\s+be)|['’]s|\s*[:=])"
    r"|(?:it|that)(?:['’]s|\s+is|\s+will\s+be|\s+should\s+be)(?:\s+now)?"
    r"|now\s+(?:it['’]s|it\s+is)"
    r"|(?:changed|rotated|updated|reset|switched|set)\s+(?:it\s+|them\s+)?to"
    r"|use\s+(?=\S+\s+(?:instead|now)\b)"
    r")\s*" + _VALUE + r"(?!\s+(?:that|which|who)\b)")  # not "it's server2 that fails"
_ANAPHORA_REACH = 120
"""How far after a cue word such a clause is taken to speak of that credential (characters)."""
_STRONG_LINK_RE = re.compile(r"[:=]|->|['’]s\b|\b(?:is|was|be|equals)\b", re.I)
_HEADER_NAME_RE = re.compile(r"^(?:[Xx]-[A-Za-z][A-Za-z\-]*|(?:[A-Z][a-z]+-)+[A-Z][a-z]+)$")

# Words that follow a cue without being credentials ("the token is required", "which key does
# it use", "rotate the token for Demo", "bearer token auth").
_NOT_SECRETS = frozenset("""
a an the my our your their his her its this that these those it they them we you i me one
is are was were be been being am do does did doing done has have had will would should could can
may might must shall need needs needed
in on at for of from to with by via into onto over under about after before through between
and or but nor not no none nothing null nil n/a na so as if then than too very also just
still already now yet here there where when which what who whom whose why how
never always sometimes usually nowhere anywhere everywhere elsewhere inside outside only
required missing invalid expired expiring revoked optional rotated stored saved kept set
correct incorrect wrong needed necessary attached included provided given sent pasted shared
below above same different secret private public empty unknown working ready changed changing
valid available enabled disabled fine ok okay good bad new old fresh stale long short broken
compromised leaked exposed gone lost deleted hidden masked encrypted safe secure somewhere
called named header bearer token tokens key keys password secret auth authentication
authorization based type kind scheme value field name id ids
please thanks thank yes yeah yep sure
goes go expires expire works work used use using uses
""".split())
_OUR_ID_RE = re.compile(r"^(?:ds|sb|ag|sec|run|call|conf|ask|cs)_[0-9A-Za-z]{6,32}$")
_WORD_RE = re.compile(r"[A-Za-z0-9_\-+/=.]{24,}")
_URL_RE = re.compile(r"\b[a-z][a-z0-9+.\-]*://[^\s<>\"'`]+", re.I)


@runtime_checkable
class SecretStore(Protocol):
    """Where credential values live, keyed by reference id (``sec_…``)."""

    def put(self, ref: str, value: str) -> None: ...
    def get(self, ref: str) -> str | None: ...
    def delete(self, ref: str) -> None: ...


class InMemorySecretStore:
    """The default store: values live as long as the process."""

    def __init__(self) -> None:
        self._values: dict[str, str] = {}

    def put(self, ref: str, value: str) -> None:
        self._values[ref] = value

    def get(self, ref: str) -> str | None:
        return self._values.get(ref)

    def delete(self, ref: str) -> None:
        self._values.pop(ref, None)

    def __repr__(self) -> str:  # never the values
        return f"InMemorySecretStore({len(self._values)} secrets)"


def new_ref() -> str:
    """A fresh reference id, ``sec_`` + 8 hex characters."""
    return f"sec_{_random.token_hex(4)}"


def ref_text(ref: str) -> str:
    """How a reference appears in a message: ``[secret:sec_1a2b3c4d]``."""
    return f"[secret:{ref}]"


def normalize_ref(value: str) -> str | None:
    """``sec_…`` from ``sec_…`` / ``secret:sec_…`` / ``[secret:sec_…]``; None if it is not a reference."""
    match = _BARE_REF_RE.match(value.strip())
    return match.group(1) if match else None


def is_ref(value: str) -> bool:
    return normalize_ref(value) is not None


def _entropy(word: str) -> float:
    counts = Counter(word)
    n = len(word)
    return -sum(c / n * math.log2(c / n) for c in counts.values())


def _looks_random(word: str) -> bool:
    """A long word that mixes letters and digits with high per-character entropy."""
    core = word.strip(".-_=/+")
    if len(core) < 24 or _OUR_ID_RE.match(core):
        return False
    digits = sum(c.isdigit() for c in core)
    letters = sum(c.isalpha() for c in core)
    if digits < 3 or letters < 3:
        return False
    # Words joined by separators ("my-internal-server-2024-v2") are prose, not keys, unless
    # one of them is itself random-looking ("canary-TOKEN-6d2f8a1c9e").
    parts = [p for p in re.split(r"[-_./]", core) if p]
    if len(parts) >= 3 and max(len(p) for p in parts) < 16 and not any(
            len(p) >= 8 and any(c.isdigit() for c in p) and any(c.isalpha() for c in p) for p in parts):
        return False
    return _entropy(core) >= 3.6


def _plausible(value: str) -> bool:
    value = value.strip("\"'`.,;:!?)]}")
    if len(value) < 6 or is_ref(value) or _OUR_ID_RE.match(value):
        return False
    if value.lower() in _NOT_SECRETS:
        return False
    if value.isalpha() and value.islower() and len(value) < 20:
        return False  # a plain word ("the token is somewhere") is not a credential
    if value.lower().startswith(("http://", "https://")):
        return False
    return True


def _credential_shaped(value: str) -> bool:
    """Looks like a credential even without "is"/":" before it: it has a digit (and a letter,
    or is long), or is random-looking ("demo-token-123", "hunter2", "123456")."""
    digits = sum(c.isdigit() for c in value)
    letters = sum(c.isalpha() for c in value)
    if digits and ((letters and len(value) >= 3) or len(value) >= 6):
        return True
    return _looks_random(value)


_PROSE_SUFFIXES = ("ed", "en", "wn", "ing", "ly", "ble", "ful", "less", "ous", "ive", "ent", "ant")


def _prose_word(value: str) -> bool:
    """A plain lowercase word that reads as English after "is" ("shown", "used", "nowhere")."""
    return value.isalpha() and value.islower() and len(value) > 4 and value.endswith(_PROSE_SUFFIXES)


def _cue_value(text: str, match: re.Match[str]) -> tuple[int, int] | None:
    """The span of the credential a cue's follow-up holds, if it is one."""
    group = "quoted" if match.group("quoted") is not None else "bare"
    start, end = match.span(group)
    value = text[start:end]
    if group == "bare":
        stripped = value.rstrip(".,;:!?)]}")
        end -= len(value) - len(stripped)
        value = stripped
    if not value.strip() or value.lower() in _NOT_SECRETS or is_ref(value) or _OUR_ID_RE.match(value):
        return None
    if REF_RE.search(value) or value.lower().startswith(("http://", "https://", "[secret")):
        return None
    if _HEADER_NAME_RE.match(value):
        return None  # "the key is X-Api-Key": a header's name, not its value
    if group == "bare" and _prose_word(value):
        return None
    strong = bool(_STRONG_LINK_RE.search(match.group("link")))
    if not strong and not _credential_shaped(value):
        return None
    return start, end


def _cue_spans(text: str) -> list[tuple[int, int]]:
    spans = [span for m in _AUTHORIZATION_RE.finditer(text) if (span := _cue_value(text, m))]
    cues = list(_CUE_RE.finditer(text))
    for cue in cues:
        for follow in (_AFTER_CUE_FOR_RE, _AFTER_CUE_ADVERB_RE, _AFTER_CUE_RE):
            match = follow.match(text, cue.end())
            span = _cue_value(text, match) if match else None
            if span is not None:
                spans.append(span)
                break
    if cues:  # "we rotated the token, the new one is X", "the key changed — use X instead"
        ends = [c.end() for c in cues]
        for match in _ANAPHORA_RE.finditer(text, ends[0]):
            before = bisect.bisect_right(ends, match.start())  # the nearest cue ending before it
            if not before or match.start() - ends[before - 1] > _ANAPHORA_REACH:
                continue
            span = _cue_value(text, match)
            if span is not None and _credential_shaped(text[span[0]:span[1]]):
                spans.append(span)
    return spans


@dataclass(frozen=True)
class Redaction:
    """The outcome of `redact`."""

    text: str
    refs: tuple[str, ...] = ()
    """New references, in order of appearance."""
    replaced: dict[str, str] = field(default_factory=dict, repr=False)
    """ref -> value, for the caller to store. Never log this."""


def find_secrets(text: str) -> list[tuple[int, int]]:
    """Spans ``(start, end)`` of credential values in ``text``, sorted and non-overlapping."""
    spans: list[tuple[int, int]] = []
    for pattern, group in _PATTERNS:
        for match in pattern.finditer(text):
            start, end = match.span(group)
            value = text[start:end]
            stripped = value.rstrip("\"'`.,;:!?)]}")
            end = start + len(stripped)
            if _plausible(stripped):
                spans.append((start, end))
    urls = [m.span() for m in _URL_RE.finditer(text)]
    for start, end in _cue_spans(text):
        if any(u0 <= start < u1 for u0, u1 in urls):  # "?api_key=VALUE&region=eu": the value ends at & or #
            end = min((i for i in (text.find("&", start, end), text.find("#", start, end)) if i >= 0), default=end)
        spans.append((start, end))
    for match in _WORD_RE.finditer(text):
        start, end = match.span()
        # A random-looking path segment or host is part of an address, not a credential;
        # credentials in URLs are caught by the query-parameter pattern above.
        if any(u0 <= start and end <= u1 for u0, u1 in urls):
            continue
        word = match.group().rstrip(".")
        if _looks_random(word):
            spans.append((start, start + len(word)))
    # Spans inside an existing reference are not secrets.
    refs = [m.span() for m in REF_RE.finditer(text)]
    spans = [s for s in spans if not any(r0 <= s[0] and s[1] <= r1 for r0, r1 in refs)]
    # Nor is the mask a credential is shown as ("…?api_key=••••", copied from a listing).
    spans = [s for s in spans if text[s[0]:s[1]].strip("\"'`.,;:!?)]}") != MASK]
    merged: list[tuple[int, int]] = []
    for start, end in sorted(spans):
        if merged and start < merged[-1][1]:
            merged[-1] = (merged[-1][0], max(end, merged[-1][1]))
        else:
            merged.append((start, end))
    return merged


def redact(text: str, store: SecretStore | None = None) -> Redaction:
    """Replace every credential in ``text`` by a fresh reference; put the values in ``store``.

    The same value pasted twice in one text gets one reference.
    """
    spans = find_secrets(text)
    if not spans:
        return Redaction(text)
    out: list[str] = []
    refs: list[str] = []
    replaced: dict[str, str] = {}
    by_value: dict[str, str] = {}
    last = 0
    for start, end in spans:
        value = text[start:end]
        ref = by_value.get(value)
        if ref is None:
            ref = by_value[value] = new_ref()
            refs.append(ref)
            replaced[ref] = value
            if store is not None:
                store.put(ref, value)
        out.append(text[last:start])
        out.append(ref_text(ref))
        last = end
    out.append(text[last:])
    return Redaction("".join(out), tuple(refs), replaced)


_CREDENTIAL_WORD_RE = re.compile(r"token|secret|passw|apikey|api[-_]key", re.I)


def named_credential(text: str) -> bool:
    """The whole message is one word that names itself a credential and has a digit in it
    ("demo-token-123", "secret42", "password1"): typed alone, it is a credential, whatever
    was asked (not a label, not a name). In a sentence such a word is left to the cues
    ("the token is demo-token-123"): a source may be called "secret-store-2"."""
    word = text.strip().strip("\"'`")
    if len(word) < 8 or len(word.split()) != 1 or not any(c.isdigit() for c in word):
        return False
    if is_ref(word) or _OUR_ID_RE.match(word) or "://" in word:
        return False
    return bool(_CREDENTIAL_WORD_RE.search(word))


def redact_all(text: str, store: SecretStore | None = None) -> Redaction:
    """Treat the whole (stripped) text as one credential: for an answer to "what is the token?"."""
    value = text.strip()
    ref = new_ref()
    if store is not None:
        store.put(ref, value)
    return Redaction(ref_text(ref), (ref,), {ref: value})


def scrub(text: str, values: Iterable[tuple[str, str]]) -> str:
    """Replace known secret values (``(ref, value)`` pairs) by their references.

    The last line of defence for anything written out (transcripts, logs): even text that
    did not pass through `redact` cannot carry a value the session knows about. A short
    value (under 8 characters, e.g. "hunter2") is replaced only where it stands as a whole
    word, so it does not eat into names that happen to contain it ("demo" in "demo_tools").
    """
    for ref, value in sorted(values, key=lambda rv: -len(rv[1])):
        if not value or len(value) < 4 or value not in text:
            continue
        if len(value) >= 8:
            text = text.replace(value, ref_text(ref))
        else:
            pattern = r"(?<![A-Za-z0-9_\-])" + re.escape(value) + r"(?![A-Za-z0-9_\-])"
            replacement = ref_text(ref)
            text = re.sub(pattern, lambda _m: replacement, text)
    return text
