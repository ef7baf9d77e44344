"""A page's lease: taken with the page loaded, then saved or released exactly once."""

from __future__ import annotations

import pytest

from piggyback.exceptions import LeaseLost
from piggyback.exceptions import PageBusy
from piggyback.lease import lease
from piggyback.stores.base import Changes
from piggyback.stores.base import PageRecord
from piggyback.stores.memory import MemoryStore


def test_leaving_the_block_unsaved_releases_the_lease() -> None:
    store = MemoryStore()
    store.push("p", [["text", "a", "1"]])
    with lease(store, "p", wait=0) as held:
        assert (held.record, [n for n, _ in held.mail.inbox]) == (None, [1])
        assert store.lock("p", 60) is None  # held
    assert held.ended
    assert store.lock("p", 60) is not None  # given back


def test_an_error_in_the_block_releases_the_lease() -> None:
    store = MemoryStore()
    with pytest.raises(KeyError), lease(store, "p", wait=0):
        raise KeyError("boom")
    assert store.lock("p", 60) is not None


def test_saving_ends_the_lease_once() -> None:
    store = MemoryStore()
    with lease(store, "p", wait=0) as held:
        held.save(Changes(record=PageRecord(seq=1)))
        with pytest.raises(RuntimeError, match=r"^The lease on page 'p' ended already\.$"):
            held.save(Changes(record=PageRecord(seq=2)))
        taken_since = store.lock("p", 60)
        held.release()  # a no-op now: it must not free the lease taken since
    assert taken_since is not None and store.lock("p", 60) is None
    assert store.load("p")[0] == PageRecord(seq=1)


def test_a_lease_lost_meanwhile_saves_nothing_and_releases_nothing() -> None:
    store = MemoryStore()
    with pytest.raises(LeaseLost), lease(store, "p", seconds=60, wait=0) as held:
        store.unlock("p", held.owner)  # as if it ran out and another took it over
        other = store.lock("p", 60)
        held.save(Changes(record=PageRecord(seq=1)))
    assert held.ended and store.load("p")[0] is None
    assert other is not None and store.lock("p", 60) is None  # the other's still


def test_a_busy_page_is_waited_for_then_refused() -> None:
    store = MemoryStore()
    store.lock("p", 60)
    with pytest.raises(PageBusy, match="still running"):
        lease(store, "p", wait=0.01)
