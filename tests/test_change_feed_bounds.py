"""The change feed's memory of this process's own changes stays bounded."""

from __future__ import annotations

import pytest

from concierge.registry import Registry
from concierge.registry.store import Store
from tests.test_pages import add_sources

pytestmark = pytest.mark.anyio


def _pause_again(registry: Registry, sid: str) -> None:
    with registry.store.transaction() as cx:  # active again, as a health check would leave it
        Store.update(cx, "sources", sid, {"status": "active"})
    registry.pause(sid)


def test_a_process_that_never_follows_the_feed_remembers_none_of_its_changes(registry: Registry) -> None:
    """`_own_changes` grew by one number per change in a process without a catalog."""
    [sid] = add_sources(registry, 1)
    for _ in range(30):
        _pause_again(registry, sid)
    assert len(registry._own_changes) == 0


async def test_numbers_the_feed_no_longer_holds_are_forgotten_at_the_next_look(registry: Registry) -> None:
    [sid] = add_sources(registry, 1)
    heard: list[tuple[str, str]] = []
    registry.on_source_change(lambda source_id, action: heard.append((source_id, action)))
    assert await registry.follow_changes() == []  # the first look starts at the head
    for _ in range(30):  # one subject: the feed keeps only its last change's number
        _pause_again(registry, sid)
    assert len(heard) == 30
    assert await registry.follow_changes() == []  # all ours: the listeners heard them already
    assert len(heard) == 30
    assert len(registry._own_changes) == 0
