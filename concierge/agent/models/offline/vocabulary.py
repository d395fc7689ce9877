"""The offline planner's vocabulary: word lists, as data.

The intent table (`intents.py`) says which phrases mean which request; this module holds
the words around them: what may be skipped (politeness, filler), what never names a source
by itself, how people say yes, no, stop and "I meant", how they describe auth schemes, and
which common words must never be read as a typo of a command ("remote" is not "remove").

A new phrasing is a new entry here or in the intent table, never new code.
"""

from __future__ import annotations

from concierge.agent.answers import read_yes_no

__all__ = [
    "ASPECT_WORDS",
    "AUTH_PHRASES",
    "CANCEL",
    "COMMAND_LEADS",
    "LAUNCHERS",
    "CONTRACTIONS",
    "CORRECTION",
    "FILLER",
    "GENERIC",
    "HEAD_NOUNS",
    "NEVER_TYPOS",
    "NOT_NAMES",
    "ORDINALS",
    "PRONOUNS",
    "STOPWORDS",
    "STOP_BEFORE_LABEL",
    "YES",
    "yes_or_no",
]

CONTRACTIONS: dict[str, tuple[str, ...]] = {
    "what's": ("what", "is"), "whats": ("what", "is"), "it's": ("it", "is"), "that's": ("that", "is"),
    "there's": ("there", "is"), "here's": ("here", "is"), "who's": ("who", "is"),
    "how's": ("how", "is"), "where's": ("where", "is"), "let's": ("let", "us"),
    "don't": ("do", "not"), "dont": ("do", "not"), "doesn't": ("does", "not"),
    "doesnt": ("does", "not"), "didn't": ("did", "not"), "isn't": ("is", "not"),
    "isnt": ("is", "not"), "aren't": ("are", "not"), "can't": ("can", "not"),
    "cant": ("can", "not"), "won't": ("will", "not"), "wont": ("will", "not"),
    "shouldn't": ("should", "not"), "i'd": ("i", "would"), "i'm": ("i", "am"), "im": ("i", "am"),
    "i've": ("i", "have"), "ive": ("i", "have"), "i'll": ("i", "will"), "you're": ("you", "are"),
    "we're": ("we", "are"), "they're": ("they", "are"), "u": ("you",), "ur": ("your",),
    "pls": ("please",), "plz": ("please",), "thx": ("thanks",), "ty": ("thanks",),
    # Hyphenated forms of command words (other hyphenated words, like X-Api-Key, stay whole).
    "rate-cap": ("rate", "cap"), "rate-limit": ("rate", "limit"), "ratelimit": ("rate", "limit"),
    "ratecap": ("rate", "cap"), "health-check": ("health", "check"), "healthcheck": ("health", "check"),
    "health-checks": ("health", "checks"), "re-enable": ("reenable",), "un-pause": ("unpause",),
    "re-test": ("retest",), "re-check": ("recheck",), "set-up": ("set", "up"), "setup": ("set", "up"),
    "hook-up": ("hook", "up"), "plug-in": ("plug", "in"), "allow-list": ("allowlist",),
    "whitelist": ("allowlist",), "white-list": ("allowlist",), "re-activate": ("reactivate",),
    "log-in": ("login",), "sign-in": ("login",), "e-mail": ("email",),
}
"""Spelled-out forms, so "what's connected" and "what is connected" read the same."""

FILLER = frozenset("""
please kindly could can would will you me for just now right rn then also too really
quickly maybe perhaps hey ok okay so well thanks thank cheers i we want wanna need like
to would love id be able let us go ahead do should actually anyway again currently
""".split())
"""Politeness and filler: never part of a request's meaning (and never a name)."""

STOPWORDS = frozenset("""
the a an my our your their his her this that these those it its of for to in on at with
and or is are be been was were am i me we us you they them from by as into onto up down
about what which who whom how when where why there here all any some every each both do
does did have has had having get got can could would should will shall may might must
not no yes so if than then too very just also only own same other such more most
""".split())
"""Words that carry no name (articles, pronouns, prepositions, auxiliaries)."""

GENERIC = frozenset("""
source sources server servers mcp custom service services connection connections
integration integrations endpoint endpoints thing things stuff one ones instance
user_mcp entry entries setup api apis
""".split())
"""Nouns that name a *kind* of thing: "my server" is not the source called "Server"."""

HEAD_NOUNS = frozenset("source server one mcp service endpoint integration".split())
"""Nouns after a name that show it is one ("the tools source", "the time server")."""

NOT_NAMES = frozenset("""
new another different other old current existing first second third last next previous
full complete entire whole quick proper thorough
now later today currently again soon anymore instead working up down healthy ok okay fine
broken failing dead alive please thanks everything anything something nothing everyone
stuff etc
""".split())
"""Words that often stand where a name would, but never are one."""

PRONOUNS = frozenset("it this that them those".split()) | {"this one", "that one"}
"""Words that point back at the source last talked about."""

STOP_BEFORE_LABEL = frozenset("""
with and in on at using use no without please thanks thank but so it its which that
rate limit limited max maximum namespace sandbox auth authentication token bearer header
key only allow allowing to from for via then also instead rather anyway
""".split())
"""Words that end a label ("call it Acme docs *with* no auth")."""

YES = frozenset("""
y yes yep yeah yup ya yea sure ok okay k go confirm confirmed approve approved proceed
absolutely definitely certainly affirmative correct right fine alright agreed
""".split())
CANCEL = (
    "cancel", "cancel that", "cancel it", "never mind", "nevermind", "forget it", "forget that",
    "forget about it", "stop", "stop that", "abort", "quit", "quit that", "no thanks",
    "no thank you", "not now", "skip it", "drop it", "leave it", "don't", "do not",
    "actually don't", "actually do not", "actually no", "no", "nope", "nah", "scratch that",
    "ignore that", "changed my mind", "i changed my mind", "stop it", "nothing", "nvm",
    "wait no", "no wait", "hold on", "wait", "no no", "stop stop", "hang on", "not yet",
)
"""Whole messages that stop the current request."""

CORRECTION = ("actually", "sorry", "i meant", "i mean", "wait", "oops", "correction",
              "my bad", "no wait", "instead", "rather", "make that", "not that")
"""Words that mark the message as correcting what was said ("actually, it's …")."""

ASPECT_WORDS: dict[str, str] = {
    "name": "name", "label": "name", "title": "name", "rename": "name",
    "url": "url", "address": "url", "endpoint": "url", "location": "url", "host": "url",
    "auth": "auth", "authentication": "auth", "scheme": "auth", "header": "auth",
    "token": "token", "key": "token", "secret": "token", "credential": "token", "password": "token",
    "rate": "rate_cap", "cap": "rate_cap", "limit": "rate_cap", "throttle": "rate_cap",
    "tools": "allowlist", "allowlist": "allowlist", "tool": "allowlist",
    "namespace": "namespace", "prefix": "namespace",
    "timeout": "timeout", "timeouts": "timeout",
}
"""A one-word answer to "what would you like to change?" and the part of the source it means."""

ORDINALS: dict[str, int] = {
    "first": 1, "1st": 1, "one": 1, "second": 2, "2nd": 2, "two": 2, "third": 3, "3rd": 3,
    "three": 3, "fourth": 4, "4th": 4, "four": 4, "fifth": 5, "5th": 5, "five": 5,
    "sixth": 6, "six": 6, "last": -1, "latter": -1, "former": 1, "top": 1, "bottom": -1,
}

AUTH_PHRASES: dict[str, tuple[str, ...]] = {
    "none": (
        "no auth", "no authentication", "no authorization", "without auth", "without authentication",
        "without a token", "without token", "no token", "no tokens", "no key", "no api key",
        "no credentials", "no credential", "no login", "no password", "unauthenticated",
        "not authenticated", "public", "open", "open access", "publicly accessible", "anonymous",
        "no auth required", "no token required", "no key required", "no login required",
        "without any credentials", "without any auth", "without any authentication",
        "without credentials", "without a key", "without any token", "without any key",
        "none", "auth none", "auth is none",
        "authentication none", "no auth at all", "does not need auth", "does not need any auth",
        "does not need authentication", "does not need a token", "does not need any token",
        "does not need a key", "does not need any key", "does not require auth",
        "does not require a token", "no need for auth", "no need for a token",
        "no longer needs auth", "no longer needs a token", "no longer needs a key",
        "no longer requires auth", "no longer uses auth", "not need auth", "need no auth",
        "needs no auth", "requires no auth", "not need a key", "not need a token",
        "remove auth", "remove the auth", "turn off auth", "disable auth", "nothing",
    ),
    "header_token": (
        "header", "custom header", "header token", "token in a header", "token in the header",
        "key in a header", "key in the header", "api key header", "in a header", "in the header",
        "header auth", "header authentication", "header based", "header-based",
    ),
    "oauth": (
        "oauth", "oauth2", "oauth 2", "oauth 2.0", "oauth 2.1", "uses oauth", "with oauth", "via oauth",
        "oauth sign in", "oauth login", "sign in with oauth", "sso", "single sign on", "login with",
        "log in with", "login", "sign in first", "needs a sign in", "needs a login",
    ),
    "bearer": (
        "bearer", "bearer token", "bearer auth", "a token", "token", "api token", "access token",
        "auth token", "authorization header", "authorization", "api key", "apikey", "oauth token",
        "personal access token", "pat", "jwt", "key",
    ),
}
"""How people name an auth scheme; ``none`` is checked first, then ``header_token``, then
``oauth`` (unless they speak of an "oauth token" they hold: that is a bearer token)."""

LAUNCHERS = ("uvx", "npx", "pipx", "python", "python3", "node", "deno", "bunx", "docker", "uv")
"""Programs that start a local MCP server: a command line starts with one of them."""

COMMAND_LEADS = ("runs with", "run with", "run it with", "start it with", "launch it with", "run it using",
                 "started with", "starts with", "launched with", "runs",
                 "command", "the command", "via the command", "using the command", "with the command")
"""Words before a command line that is not quoted ("the server that runs with uvx mcp-server-git")."""

NEVER_TYPOS = frozenset("""
remote remotes paste pasted posted cause last lost list listed lists text test tests tested
testing rest reset result results resource resources resort restore restart stats status
statuses state states stage staged staging start started stars stay track tracks ticket
tickets token tokens taken tools tool pools pull pulls poll polls house pauses paused
resumed revoked deleted registered connected connecting connection disabled enabled
removed dropped forgot forgotten renamed moved moving moves check checked checking checks health
healthy chat chats cat hat that what when then than them there these those this those
both bath path paths paste name names named same game came come some more move mode model
models node nodes code codes cost post host hosts most must rate rates late later date
data demo demos memo delete deleted dele delay relay replay reply apply apple able table
cable sable label labels level levels local locale vocal focus bonus
""".split())
"""Real words that sit one letter away from a command word; read as themselves, never as a typo."""

def yes_or_no(text: str) -> bool | None:
    """A typed answer to "go ahead?" (True, False, or None when unclear): the same reading as
    every surface's (`concierge.agent.answers.read_yes_no`)."""
    return read_yes_no(text)
