"""Many nodes at once, but never more than `limit` BMC sessions open at a time.

Metal3 caps concurrent provisioning at 20 for the same reason: each action holds a session
(and, for cycle, a deadline of polling) on a BMC and a thread here, and a rack's worth at once
would be a rack's worth of sockets and threads."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Iterable, TypeVar

DEFAULT_LIMIT = 20

T = TypeVar("T")
R = TypeVar("R")


def run_bounded(fn: Callable[[T], R], items: Iterable[T], limit: int = DEFAULT_LIMIT) -> list[R]:
    """fn over every item, at most `limit` at once; the results in the items' order. fn is
    expected to turn its failures into results (one node's dead BMC does not stop the rest)."""
    items = list(items)
    if not items:
        return []
    if limit < 1:
        raise ValueError("the pool's limit must be at least 1")
    with ThreadPoolExecutor(max_workers=min(limit, len(items)), thread_name_prefix="power") as pool:
        return list(pool.map(fn, items))
