"""A worker pool's results in input order with a bounded number of items in flight."""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable, Iterator


def ordered_imap(submit: Callable, function: Callable, items: Iterable, window: int) -> Iterator:
    """Like ``Pool.imap`` but with at most ``window`` items in flight, so reading never runs ahead
    of the workers (``Pool.imap`` consumes its whole input eagerly)."""
    pending: deque = deque()
    iterator = iter(items)
    for item in iterator:
        pending.append(submit(function, (item,)))
        if len(pending) >= window:
            break
    while pending:
        result = pending.popleft().get()
        for item in iterator:
            pending.append(submit(function, (item,)))
            break
        yield result
