"""Plan the next batches on a connection of their own while the current batch deletes."""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TypeVar

from django.db import connections

T = TypeVar("T")

#: How many planned batches may wait for the deleting connection: enough to keep both busy,
#: few enough that a plan is at most milliseconds old when its batch deletes.
DEPTH = 2

_ITEM, _END, _ERROR = "item", "end", "error"


@contextmanager
def planned_ahead(alias: str, plan: Callable[[], Iterator[T]]) -> Iterator[Iterator[T]]:
    """
    Iterate over ``plan()``, produced on a background thread with its own connection.

    Why: counting a batch before deleting it (the audit's rows per session and key type)
    costs about as much as the delete; done by a second backend while the first deletes and
    commits, it costs the run almost no time. The planner holds one connection of the alias
    (from the pool when there is one) and gives it back when it ends.

    Inside a caller's transaction (tests wrap each test in one) another connection could not
    see the caller's rows, so ``plan()`` then runs inline, on the caller's connection.

    Whatever the planner raises is raised to the consumer at the item where it happened. If
    the consumer stops early (an error, or it has enough), the planner stops after at most
    its current query.
    """
    if connections[alias].in_atomic_block:
        yield plan()
        return

    items: queue.Queue = queue.Queue(maxsize=DEPTH)
    stop = threading.Event()

    def put(kind: str, value: object) -> bool:
        while not stop.is_set():
            try:
                items.put((kind, value), timeout=0.05)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        try:
            for item in plan():
                if not put(_ITEM, item):
                    return
            put(_END, None)
        except BaseException as error:  # handed to the consumer, raised there
            put(_ERROR, error)
        finally:
            connections[alias].close()  # this thread's connection: back to the pool

    def consume() -> Iterator[T]:
        while True:
            kind, value = items.get()
            if kind == _ITEM:
                yield value
            elif kind == _END:
                return
            else:
                raise value

    planner = threading.Thread(target=produce, name="cleanup-planner", daemon=True)
    planner.start()
    try:
        yield consume()
    finally:
        stop.set()
        planner.join()
