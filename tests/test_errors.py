"""One exception tree: every class in concierge/errors.py, one machine code each, its HTTP
status a class attribute, and the wire codec (`concierge.wire`) a faithful round trip."""

from __future__ import annotations

import importlib
import pkgutil
import re
from pathlib import Path

import pytest

import concierge
from concierge import errors
from concierge.errors import (
    ConciergeError,
    ConnectorError,
    InvalidForSource,
    RateLimited,
    UnrecognizedError,
    ValidationFailed,
    error_classes,
)
from concierge.mcp_client.kinds import ErrorKind
from concierge.wire import error_body, error_from_response, status_for

PACKAGE = Path(concierge.__file__).parent


def _all_modules() -> list[str]:
    names = []
    for info in pkgutil.walk_packages([str(PACKAGE)], prefix="concierge."):
        if info.name.endswith("__main__"):
            continue
        names.append(info.name)
    return names


def _example(cls: type[ConciergeError]) -> ConciergeError:
    if issubclass(cls, ValidationFailed):
        return cls("body is wrong", field="base_url")
    if issubclass(cls, RateLimited):
        return cls("slow down", retry_after=2.5)
    if issubclass(cls, ConnectorError):
        return cls("timeout", "no answer from the server within 10 s")
    if cls is UnrecognizedError:
        return cls("from a newer server", code="brand_new", status_code=418)
    return cls(f"a {cls.__name__}")


def test_every_error_class_lives_in_the_tree():
    for name in _all_modules():
        importlib.import_module(name)
    outside = []
    pending = [ConciergeError]
    while pending:
        cls = pending.pop()
        pending.extend(cls.__subclasses__())
        if cls.__module__ != "concierge.errors":
            outside.append(f"{cls.__module__}.{cls.__qualname__}")
    assert outside == []


def test_the_docstring_draws_every_class_and_all_lists_them():
    drawn = set(re.findall(r"[─└├] (\w+)", errors.__doc__ or ""))
    names = {cls.__name__ for cls in error_classes()}
    assert names - {"ConciergeError"} == drawn
    assert names <= set(errors.__all__)
    assert errors.__all__ == sorted(errors.__all__)


def test_one_class_per_code_and_status():
    seen: dict[tuple[str, int], str] = {}
    for cls in error_classes():
        if cls is UnrecognizedError:
            continue
        key = (cls.error, cls.status_code)
        assert key not in seen, f"{cls.__name__} repeats {seen[key]}'s code and status"
        seen[key] = cls.__name__
    codes = [cls.error for cls in error_classes() if cls not in (UnrecognizedError, InvalidForSource)]
    assert len(codes) == len(set(codes))


@pytest.mark.parametrize("cls", error_classes(), ids=lambda c: c.__name__)
def test_the_wire_codec_round_trips_every_class(cls: type[ConciergeError]):
    exc = _example(cls)
    back = error_from_response(status_for(exc), error_body(exc))
    assert type(back) is (cls if cls is not ConciergeError else UnrecognizedError)
    assert back.detail == exc.detail and back.to_dict() == exc.to_dict()
    if isinstance(exc, ValidationFailed):
        assert isinstance(back, ValidationFailed) and back.field == exc.field
    if isinstance(exc, RateLimited):
        assert isinstance(back, RateLimited) and back.retry_after == exc.retry_after
    if isinstance(exc, ConnectorError):
        assert isinstance(back, ConnectorError) and back.kind is ErrorKind.TIMEOUT


def test_an_unknown_code_keeps_what_the_server_sent():
    back = error_from_response(405, {"error": "method_not_allowed", "detail": "use GET"})
    assert isinstance(back, UnrecognizedError)
    assert (back.to_dict(), status_for(back)) == ({"error": "method_not_allowed", "detail": "use GET"}, 405)
    assert error_from_response(502, "not json").detail == "HTTP 502"


def test_no_module_sets_an_error_code_on_an_instance():
    offenders = []
    for path in PACKAGE.rglob("*.py"):
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if re.search(r"\b(?:err|exc|e)\.error\s*=[^=]|[(,]\s*error=\"", line) and "ToolError(" not in line:
                offenders.append(f"{path.relative_to(PACKAGE)}:{number}: {line.strip()}")
    assert offenders == []
