"""A page's lease: how answering takes a page, then commits it or gives it back.

One request of a page runs at a time: it takes the page's lease, which loads the page,
and ends it exactly once, by saving what it changed or, leaving the ``with`` block
without saving (an error included), by releasing it:

.. code-block:: python

    with lease(store, page_id) as held:
        if held.record is None:
            return  # released
        held.save(Changes(record=held.record))

Events and what a page queues while it renders both commit this way.

A store takes a lease with :meth:`~piggyback.stores.base.Store.begin` (or ``lock``) and
gives it back with ``unlock`` or ``save``: ``lock`` and ``unlock`` are the store
interface's names for taking and giving back a lease, kept for stores written against
it. Nothing else calls them.

.. versionadded:: 0.1
"""

from __future__ import annotations

import time
import typing as t

from .exceptions import PageBusy
from .stores.base import LeaseLost

if t.TYPE_CHECKING:
    from types import TracebackType

    from .stores.base import Changes
    from .stores.base import Mail
    from .stores.base import PageRecord
    from .stores.base import Store

#: Seconds a request may hold a page before another may take it over.
DEFAULT_LEASE = 60.0
#: Seconds a request waits for its busy page before giving up.
DEFAULT_WAIT = 5.0


class Lease:
    """A page's lease, held: the page as it was loaded when the lease was taken.

    :param store: the page's store.
    :param page_id: the page.
    :param owner: the store's owner token for the lease.
    :param record: the page's record, ``None`` for a page the store does not know.
    :param mail: what waits for the page.
    """

    def __init__(
        self, store: Store, page_id: str, owner: str, record: PageRecord | None, mail: Mail
    ) -> None:
        self.store = store
        self.page_id = page_id
        self.owner = owner
        self.record = record
        self.mail = mail
        #: Whether the lease was saved or released (or lost): it is no longer held.
        self.ended = False

    def save(self, changes: Changes) -> None:
        """Commit ``changes`` atomically, which ends the lease.

        :raise LeaseLost: the lease ran out and another request took the page over;
            nothing was saved. Any other error leaves the lease held, for the ``with``
            block to release.
        """
        if self.ended:
            raise RuntimeError(f"The lease on page {self.page_id!r} ended already.")
        try:
            self.store.save(self.page_id, self.owner, changes)
        except LeaseLost:
            self.ended = True  # another request holds the page now
            raise
        self.ended = True

    def release(self) -> None:
        """Give the lease back without saving (the store's ``unlock``), unless it ended
        already."""
        if not self.ended:
            self.ended = True
            self.store.unlock(self.page_id, self.owner)

    def __enter__(self) -> Lease:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.release()

    def __repr__(self) -> str:
        return f"<Lease {self.page_id!r}{' ended' if self.ended else ''}>"


def lease(
    store: Store, page_id: str, *, seconds: float = DEFAULT_LEASE, wait: float = DEFAULT_WAIT
) -> Lease:
    """Take the page's lease and load the page, waiting up to ``wait`` seconds while
    another request holds it; use the result in a ``with`` block.

    :param store: the page's store.
    :param page_id: the page.
    :param seconds: how long the lease is held before another request may take it over.
    :param wait: how long to wait for a busy page.
    :raise PageBusy: the page stayed busy; nothing was taken.
    """
    deadline = time.monotonic() + wait
    pause = 0.002
    while True:
        begun = store.begin(page_id, seconds)
        if begun is not None:
            return Lease(store, page_id, *begun)
        if time.monotonic() + pause > deadline:
            raise PageBusy("Another request of this page is still running.")
        time.sleep(pause)
        pause = min(pause * 2, 0.05)
