"""Ids made by one process only grow, so keyset pages over (created_at, id) never skip a row
added after a cursor was taken (found as a flaky paging test: two rows made in one millisecond
could sort in the other order)."""

from __future__ import annotations

import threading

from concierge.ids import new_id


def test_ids_made_in_one_millisecond_still_grow() -> None:
    ids = [new_id("ds") for _ in range(5000)]
    assert ids == sorted(ids) and len(set(ids)) == len(ids)
    assert all(i.startswith("ds_") and len(i) == 29 for i in ids)


def test_ids_made_by_threads_at_once_are_unique() -> None:
    made: list[list[str]] = [[] for _ in range(4)]

    def make(out: list[str]) -> None:
        out.extend(new_id("ag") for _ in range(2000))

    threads = [threading.Thread(target=make, args=(m,)) for m in made]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    every = [i for m in made for i in m]
    assert len(set(every)) == len(every)
    assert all(m == sorted(m) for m in made)
