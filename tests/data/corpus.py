"""The conversation corpus: parse it, build its worlds, run it through real sessions, score it.

Not a test module (``tests/test_conversation_corpus.py`` asserts on it; ``bench/conversation.py``
prints it). See ``tests/data/conversations/README.md`` for the file format.

Every case runs in its own registry (a copy of its world's SQLite home), through a real
`ConciergeSession` with the offline planner, against real MCP servers on loopback. A
simulated person answers the planner's questions from the case's facts, confirms the
expected write and declines anything else. Scored per case:

- right: the expected call happened (a write confirmed and run, a read answered) or the last
  reply is of the expected kind, and no other write was proposed;
- wrong target: a write was proposed on an existing source or agent other than the expected one;
- dead end: six messages from the person without reaching the outcome while questions go on;
- minimal: right in the smallest possible number of messages (scripted ones plus one per
  fact the person had to be asked for).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets as _random
import shlex
import shutil
import tempfile
import time
from collections import Counter, defaultdict
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from concierge.agent.events import AgentFinish, AgentToolCall, AgentToolResult, ConfirmationRequired, SecretRequired
from concierge.agent.models.offline import OfflinePlanner
from concierge.agent.models.offline.entities import same_url
from concierge.agent.models.offline.state import Say
from concierge.agent.secrets import ref_text
from concierge.agent.session import ConciergeSession
from concierge.backend import LocalBackend
from concierge.registry import Registry
from tests.mcp_servers import closed_port_url, demo_app, serve_in_thread, time_server_app

__all__ = ["CORPUS_DIR", "Case", "Outcome", "Report", "load", "run_corpus", "servers"]

CORPUS_DIR = Path(__file__).resolve().parent / "conversations"
MAX_MESSAGES = 6
WRITES = {"register_source", "update_source", "pause_source", "resume_source", "revoke_source",
          "create_agent", "create_sandbox"}
SOURCE_TOOLS = {"update_source", "pause_source", "resume_source", "revoke_source", "test_source",
                "show_source", "delete_source_command"}


def _token(kind: str) -> str:
    """A fixture credential assembled at run time (never a literal that looks like a real key)."""
    return "-".join(("canary", kind.upper(), "7c41e9b2d05a"))


TOKENS = {"bearer": _token("corpus-bearer"), "header": _token("corpus-header")}


# --------------------------------------------------------------------------------------------
# Parsing


@dataclass(frozen=True)
class Expectation:
    tool: str | None = None
    tools: tuple[str, ...] = ()
    target: str | None = None
    args: tuple[tuple[str, str], ...] = ()
    kinds: tuple[str, ...] = ()
    contains: str | None = None


@dataclass(frozen=True)
class Case:
    id: str
    split: str
    intent: str
    world: str
    turns: tuple[str, ...]
    expect: Expectation
    facts: tuple[tuple[str, str], ...]
    line: int

    @property
    def min_messages(self) -> int:
        scripted = sum(1 for t in self.turns if not t.startswith("<"))
        return scripted + sum(1 for k, _ in self.facts if k != "token")


def _split_words(text: str) -> list[str]:
    return shlex.split(text, posix=True)


def _parse_expectation(text: str) -> Expectation:
    text = text.strip()
    if text.startswith("@"):
        head, _, rest = text.partition(" ")
        kinds = tuple(k.strip() for k in head[1:].split("|"))
        contains = _split_words(rest)[0] if rest.strip() else None
        return Expectation(kinds=kinds, contains=contains)
    words = _split_words(text)
    tools = tuple(words[0].split("|"))
    target = None
    args: list[tuple[str, str]] = []
    for word in words[1:]:
        if "=" in word and re.match(r"^[a-z_]+=", word):
            key, _, value = word.partition("=")
            args.append((key, value))
        elif target is None:
            target = word
    return Expectation(tool=tools[0], tools=tools, target=target, args=tuple(args))


def load(paths: Sequence[Path] | None = None) -> list[Case]:
    """Every case of the corpus files (default: all of ``conversations/*.txt``)."""
    cases: list[Case] = []
    for path in paths or sorted(CORPUS_DIR.glob("*.txt")):
        world, intent = "empty", "misc"
        for number, raw in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            line = raw.strip()
            if not line or line.startswith("#"):
                continue
            if line.startswith("@world "):
                world = line.split(None, 1)[1].strip()
                continue
            if line.startswith("@intent "):
                intent = line.split(None, 1)[1].strip()
                continue
            turns_text, sep, rest = line.partition(" => ")
            if not sep:
                raise ValueError(f"{path.name}:{number}: no ' => ' in {line!r}")
            expect_text, _, facts_text = rest.partition(" ;; ")
            facts = tuple((k, v) for k, _, v in (w.partition("=") for w in _split_words(facts_text)))
            turns = tuple(t.strip() for t in turns_text.split(" || "))
            cases.append(Case(f"{path.stem}:{number}", path.stem, intent, world, turns,
                              _parse_expectation(expect_text), facts, number))
    return cases


# --------------------------------------------------------------------------------------------
# Servers and worlds


@contextlib.contextmanager
def servers() -> Iterator[dict[str, str]]:
    """The corpus's MCP servers on loopback: name -> MCP URL."""
    with contextlib.ExitStack() as stack:
        urls = {
            "open": stack.enter_context(serve_in_thread(demo_app())).url(),
            "open2": stack.enter_context(serve_in_thread(demo_app())).url(),
            "bearer": stack.enter_context(serve_in_thread(demo_app(token=TOKENS["bearer"]))).url(),
            "header": stack.enter_context(serve_in_thread(demo_app(token=TOKENS["header"], header="X-Api-Key"))).url(),
            "time": stack.enter_context(serve_in_thread(time_server_app())).url(),
            "closed": closed_port_url(),
        }
        yield urls


async def _source(b: LocalBackend, name: str, url: str, ns: str, *, token: str | None = None,
                  header: str | None = None, sandbox: str | None = None, **extra: Any) -> str:
    body: dict[str, Any] = {"name": name, "base_url": url, "app_namespace": ns,
                            "auth_kind": "header_token" if header else "bearer" if token else "none", **extra}
    if token:
        body["token"] = token
    if header:
        body["auth_header"] = header
    outcome = await b.register_source(body, sandbox=sandbox)
    assert outcome.data_source_id
    return outcome.data_source_id


async def _w_demo(b: LocalBackend, u: dict[str, str]) -> None:
    await _source(b, "Demo", u["open"], "demo")


async def _w_ht(b: LocalBackend, u: dict[str, str]) -> None:
    await _source(b, "HT", u["open"], "ht")
    await _source(b, "Demo", u["open2"], "demo")


async def _w_acme(b: LocalBackend, u: dict[str, str]) -> None:
    await _source(b, "Acme prod", u["open"], "acme_prod")
    await _source(b, "Acme staging", u["open"], "acme_staging")


async def _w_mixed(b: LocalBackend, u: dict[str, str]) -> None:
    await _source(b, "Demo", u["open"], "demo")
    await _source(b, "Time", u["time"], "time")
    await _source(b, "Legacy", u["closed"], "legacy")
    billing = await _source(b, "Billing", u["open2"], "billing")
    await b.pause_source(billing)
    old = await _source(b, "Old docs", u["open2"], "old_docs")
    await b.revoke_source(old)


async def _w_agents(b: LocalBackend, u: dict[str, str]) -> None:
    await _w_mixed(b, u)
    await b.create_agent({"slug": "support-bot", "name": "Support bot", "tool_allowlist": ["demo_*", "legacy_*"]})
    await b.create_agent({"slug": "sales", "name": "Sales"})
    await b.create_agent({"slug": "ops-bot", "name": "Ops", "tool_allowlist": ["time_*"]})


async def _w_secure(b: LocalBackend, u: dict[str, str]) -> None:
    await _source(b, "Secure", u["bearer"], "secure", token=TOKENS["bearer"])
    await _source(b, "Keyed", u["header"], "keyed", token=TOKENS["header"], header="X-Api-Key")
    await _source(b, "Wiki", u["open"], "wiki")


async def _w_sandboxes(b: LocalBackend, u: dict[str, str]) -> None:
    await _source(b, "Demo", u["open"], "demo")
    await b.create_sandbox("staging")
    await b.create_sandbox("prod")
    await _source(b, "Staging demo", u["open2"], "demo", sandbox="staging")


async def _w_allow(b: LocalBackend, u: dict[str, str]) -> None:
    await _source(b, "Demo", u["open"], "demo", allowed_tools=["search_docs", "echo"])
    await _source(b, "Time", u["time"], "time")


async def _w_words(b: LocalBackend, u: dict[str, str]) -> None:
    await _source(b, "Time", u["time"], "time")
    await _source(b, "Tools", u["open"], "tools")
    await _source(b, "Server", u["open2"], "server")


async def _w_empty(b: LocalBackend, u: dict[str, str]) -> None:
    return None


WORLDS: dict[str, Callable[[LocalBackend, dict[str, str]], Awaitable[None]]] = {
    "empty": _w_empty, "demo": _w_demo, "ht": _w_ht, "acme": _w_acme, "mixed": _w_mixed,
    "agents": _w_agents, "secure": _w_secure, "sandboxes": _w_sandboxes, "allow": _w_allow,
    "words": _w_words,
}


async def build_worlds(names: set[str], urls: dict[str, str], root: Path) -> dict[str, Path]:
    """One registry home per world, built once; each case runs on a copy."""
    homes = {}
    for name in sorted(names):
        home = root / f"world-{name}"
        backend = LocalBackend(Registry.open(home))
        try:
            await WORLDS[name](backend, urls)
        finally:
            await backend.aclose()
        homes[name] = home
    return homes


# --------------------------------------------------------------------------------------------
# Running one case


class _Recorder:
    """The offline planner, with every step it took kept for scoring."""

    def __init__(self) -> None:
        self.planner = OfflinePlanner()
        self.name = self.planner.name
        self.reads_whole_history = True
        self.steps: list[Any] = []

    async def respond(self, messages: Any, tools: Any, *, on_text: Any = None) -> Any:
        self.steps.append(self.planner.plan(messages))
        return await self.planner.respond(messages, tools, on_text=on_text)

    @property
    def last_say(self) -> Say | None:
        return next((s for s in reversed(self.steps) if isinstance(s, Say)), None)


@dataclass
class Outcome:
    case: Case
    right: bool = False
    why: str = ""
    wrong_target: bool = False
    unexpected_write: bool = False
    dead_end: bool = False
    messages: int = 0
    transcript: list[str] = field(default_factory=list)

    @property
    def minimal(self) -> bool:
        return self.right and self.messages <= self.case.min_messages


def _fill(text: str, urls: dict[str, str], store: Any) -> str:
    def sub(match: re.Match[str]) -> str:
        key = match.group(1)
        if key.startswith("ref:"):
            ref = f"sec_{_random.token_hex(4)}"
            store.put(ref, TOKENS[key[4:]])
            return ref_text(ref)
        if key.startswith("token:"):
            return TOKENS[key[6:]]
        if key == "open_port":
            return urls["open"].rsplit(":", 1)[1].split("/")[0]
        return urls[key]
    return re.sub(r"\{([a-z0-9_:]+)\}", sub, text)


_AUTH_WORDS = {"bearer": "a bearer token", "header": "a custom header", "none": "no auth"}


class _Run:
    def __init__(self, case: Case, session: ConciergeSession, model: _Recorder, urls: dict[str, str],
                 backend: LocalBackend) -> None:
        self.case, self.session, self.model, self.urls, self.backend = case, session, model, urls, backend
        self.outcome = Outcome(case)
        self.facts = dict(case.facts)
        self.calls: list[tuple[str, dict[str, Any]]] = []
        self.arguments: dict[str, dict[str, Any]] = {}
        self.achieved = False
        self.last_call: AgentToolCall | None = None

    def note(self, text: str) -> None:
        self.outcome.transcript.append(text)

    async def stream(self, events: Any) -> AgentFinish | None:
        last = None
        async for event in events:
            if isinstance(event, AgentToolCall):
                self.calls.append((event.name, event.arguments))
                self.arguments[event.call_id] = event.arguments
                self.last_call = event
                self.note(f"  call {event.name} {json.dumps(event.arguments)}")
            elif isinstance(event, AgentToolResult):
                result = event.result if isinstance(event.result, dict) else {}
                if event.name in WRITES and not event.error and result.get("status") not in (
                        "declined", "not_confirmed", "skipped", "cancelled") and self._expected_write(
                        event.name, self._args_of(event.call_id)):
                    self.achieved = True
            elif isinstance(event, AgentFinish):
                last = event
            elif event.type == "agent_error":
                self.note(f"  error {event.to_dict()}")
        say = self.model.last_say
        if say is not None:
            self.note(f"  says[{say.kind}/{say.asks}] {say.text[:160]!r}")
        return last

    def _args_of(self, call_id: str) -> dict[str, Any]:
        return self.arguments.get(call_id, {})

    async def target_name(self, tool: str, args: dict[str, Any]) -> str | None:
        if tool == "create_agent":
            return str(args.get("slug"))
        ref = args.get("source")
        if not ref:
            return None
        rows = await self.backend.list_sources(sandbox=self.session.sandbox)
        for s in rows:
            if ref in (s.id, s.name) or str(ref).casefold() in (s.name.casefold(), s.app_namespace.casefold()):
                return s.name
        return str(ref)

    def _matches_args(self, args: dict[str, Any]) -> bool:
        for key, want in self.case.expect.args:
            want = _fill(want, self.urls, self.session.secrets) if "{" in want else want
            have = args.get(key)
            if want == "-":
                if have not in (None, [], "", False):
                    return False
            elif want == "*":
                if not have:
                    return False
            elif isinstance(have, bool) or want in ("true", "false"):
                if bool(have) != (want == "true"):
                    return False
            elif isinstance(have, list):
                if sorted(str(x) for x in have) != sorted(w.strip() for w in want.split(",")):
                    return False
            elif key == "url" and have is not None:
                if not same_url(str(have), want):
                    return False
            elif str(have) != want:
                return False
        return True

    def _expected_write(self, tool: str, args: dict[str, Any]) -> bool:
        expect = self.case.expect
        return tool in expect.tools and self._matches_args(args) and self._target_ok

    async def judge_proposal(self, tool: str, args: dict[str, Any]) -> bool:
        """Whether this write is the one the person asked for (else it is declined)."""
        expect = self.case.expect
        target = await self.target_name(tool, args)
        self._target_ok = expect.target is None or (target or "").casefold() == expect.target.casefold()
        ok = tool in expect.tools and self._target_ok and self._matches_args(args)
        if not ok and "nothing" not in expect.kinds:
            self.outcome.unexpected_write = True
            existing = tool != "register_source" and tool != "create_sandbox"
            if existing and (expect.target is None or tool not in expect.tools or not self._target_ok):
                if not (tool == "create_agent" and expect.tool == "create_agent"):
                    self.outcome.wrong_target = True
            self.note(f"  WRONG WRITE {tool} {json.dumps(args)} (target {target})")
        return ok

    async def settle(self, finish: AgentFinish | None, scripted_left: list[str]) -> bool:
        """Answer what the run waits for, when the script does not; False when stuck."""
        while finish is not None and finish.stop_reason != "end_turn":
            pending = self.session.pending_event()
            nxt = scripted_left[0] if scripted_left else None
            if isinstance(pending, ConfirmationRequired):
                if nxt in ("<yes>", "<no>"):
                    scripted_left.pop(0)
                    ok = await self.judge_proposal(pending.tool, pending.arguments)
                    self.session.confirm(pending.id, nxt == "<yes>" and ok)
                elif nxt is not None:
                    if nxt == "<ctrl-c>":
                        scripted_left.pop(0)
                    return True  # the next message drops it
                else:
                    ok = await self.judge_proposal(pending.tool, pending.arguments)
                    url = str(pending.arguments.get("url") or "")
                    remote = url and not re.match(r"https?://(127\.0\.0\.1|localhost)[:/]", url)
                    if ok and remote:  # never reach out of loopback: judged, not run
                        self.achieved = True
                        self.session.confirm(pending.id, False)
                    else:
                        self.session.confirm(pending.id, ok)
            elif isinstance(pending, SecretRequired):
                if nxt is not None and nxt.startswith("<secret"):
                    scripted_left.pop(0)
                    self.session.provide_secret(pending.id, TOKENS[nxt[8:-1].strip()])
                elif nxt is not None:
                    if nxt == "<ctrl-c>":
                        scripted_left.pop(0)
                    return True
                else:
                    args = self.last_call.arguments if self.last_call else {}
                    if not await self.judge_proposal(pending.tool, args):
                        return False
                    self.session.provide_secret(pending.id, TOKENS[self.facts.get("token", "bearer")])
            else:
                return False
            finish = await self.stream(self.session.resume())
        return True

    def answer_for(self, say: Say) -> str | None:
        asks, facts = say.asks, self.facts
        if asks == "auth_kind" and "auth" in facts:
            return _AUTH_WORDS[facts["auth"]]
        if asks == "auth_header" and "header" in facts:
            return facts["header"]
        if asks == "source" and "which" in facts:
            return facts["which"]
        if asks == "confirm":
            return "yes"
        key = {"rate_cap_per_minute": "rate_cap_per_minute", "allowed_tools": "tools",
               "app_namespace": "namespace"}.get(asks or "", asks or "")
        if asks == "name" and "new_name" in facts and self.case.expect.tool == "update_source":
            key = "new_name"
        value = facts.get(key)
        return _fill(value, self.urls, self.session.secrets) if value is not None else None

    def check_answer_kind(self) -> None:
        expect, say = self.case.expect, self.model.last_say
        if say is None:
            self.outcome.why = "no reply"
            return
        for kind in expect.kinds:
            if kind == "ask_which":
                good = say.kind in ("ask", "not_found") and say.asks == "source"
            elif kind.startswith("ask:"):
                good = say.kind in ("ask", "not_found") and say.asks == kind[4:]
            else:
                good = say.kind == kind
            if good and (expect.contains is None or expect.contains in say.text):
                if not self.outcome.unexpected_write:
                    self.outcome.right = True
                return
        self.outcome.why = f"said {say.kind}/{say.asks}, wanted {'|'.join(expect.kinds)}"

    def check_read(self) -> None:
        expect, say = self.case.expect, self.model.last_say
        hits = [(n, a) for n, a in self.calls if n in expect.tools]
        final = say is not None and say.kind == "answer" and say.tool in expect.tools
        for name, args in hits:
            if expect.target is not None and name in SOURCE_TOOLS:
                if str(args.get("source", "")).casefold() not in self._target_names():
                    continue
            if self._matches_args(args) and final and not self.outcome.unexpected_write:
                self.outcome.right = True
                return
        self.outcome.why = f"calls {[n for n, _ in self.calls]}, last {say.kind if say else None}"

    def _target_names(self) -> set[str]:
        return {self.case.expect.target.casefold()} | self._target_aliases

    _target_aliases: set[str] = set()
    _target_ok = True


async def _run_case(case: Case, home: Path, urls: dict[str, str]) -> Outcome:
    backend = LocalBackend(Registry.open(home))
    model = _Recorder()
    session = ConciergeSession(backend, model)
    run = _Run(case, session, model, urls, backend)
    try:
        if case.expect.target:
            rows = await backend.list_sources()
            run._target_aliases = {x.casefold() for s in rows if s.name.casefold() == case.expect.target.casefold()
                                   for x in (s.id, s.app_namespace, s.name)}
        script = list(case.turns)
        while script:
            turn = script.pop(0)
            if turn.startswith("<"):
                continue  # an answer the run did not wait for
            run.outcome.messages += 1
            text = _fill(turn, urls, session.secrets)
            run.note(f"> {text}")
            finish = await run.stream(session.send(text))
            if not await run.settle(finish, script):
                break
        is_write = all(t in WRITES for t in case.expect.tools)
        if case.expect.kinds:
            run.check_answer_kind()
            return run.outcome
        while not run.achieved and run.outcome.messages < MAX_MESSAGES:
            if not is_write:
                run.check_read()
                if run.outcome.right:
                    return run.outcome
            say = model.last_say
            if say is None or say.ends:
                break
            reply = run.answer_for(say) or "I don't know"
            run.outcome.messages += 1
            run.note(f"> {reply}")
            finish = await run.stream(session.send(reply))
            if not await run.settle(finish, []):
                break
        if is_write:
            run.outcome.right = run.achieved and not run.outcome.unexpected_write
            if not run.outcome.right:
                run.outcome.why = run.outcome.why or "expected write not done"
        else:
            run.check_read()
        say = model.last_say
        if not run.outcome.right and run.outcome.messages >= MAX_MESSAGES and say is not None and not say.ends:
            run.outcome.dead_end = True
        return run.outcome
    finally:
        await backend.aclose()


# --------------------------------------------------------------------------------------------
# The whole corpus


@dataclass
class Report:
    outcomes: list[Outcome]
    seconds: float = 0.0

    def accuracy(self, split: str | None = None) -> float:
        chosen = [o for o in self.outcomes if split is None or o.case.split == split]
        return sum(o.right for o in chosen) / len(chosen) if chosen else 0.0

    @property
    def wrong_target(self) -> list[Outcome]:
        return [o for o in self.outcomes if o.wrong_target]

    @property
    def unexpected_writes(self) -> list[Outcome]:
        return [o for o in self.outcomes if o.unexpected_write]

    @property
    def dead_ends(self) -> list[Outcome]:
        return [o for o in self.outcomes if o.dead_end]

    @property
    def failures(self) -> list[Outcome]:
        return [o for o in self.outcomes if not o.right]

    def minimal_share(self) -> float:
        right = [o for o in self.outcomes if o.right]
        return sum(o.minimal for o in right) / len(right) if right else 0.0

    def by_intent(self) -> dict[str, tuple[int, int]]:
        table: dict[str, list[int]] = defaultdict(lambda: [0, 0])
        for o in self.outcomes:
            table[o.case.intent][0] += o.right
            table[o.case.intent][1] += 1
        return {k: (v[0], v[1]) for k, v in sorted(table.items())}

    def splits(self) -> Counter[str]:
        return Counter(o.case.split for o in self.outcomes)


async def run_corpus(cases: Sequence[Case] | None = None, *, urls: dict[str, str] | None = None) -> Report:
    """Run ``cases`` (default: the whole corpus). ``urls``: servers already running (see `servers`)."""
    cases = list(cases if cases is not None else load())
    if urls is None:
        with servers() as started:
            return await run_corpus(cases, urls=started)
    start = time.perf_counter()
    os.environ.setdefault("CONCIERGE_MASTER_KEY", "0123456789abcdef" * 4)
    root = Path(tempfile.mkdtemp(prefix="concierge-corpus-"))
    try:
        homes = await build_worlds({c.world for c in cases}, urls, root)
        outcomes = []
        for n, case in enumerate(cases):
            home = root / f"case-{n}"
            shutil.copytree(homes[case.world], home)
            try:
                outcomes.append(await _run_case(case, home, urls))
            finally:
                shutil.rmtree(home, ignore_errors=True)
        return Report(outcomes, time.perf_counter() - start)
    finally:
        shutil.rmtree(root, ignore_errors=True)
