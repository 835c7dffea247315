"""Worker pools: started so that a signal cannot cut the start in half, and their results in input order
with a bounded number of items in flight."""

from __future__ import annotations

import signal
import threading
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


@contextmanager
def worker_pool(context, workers: int, initializer: Callable, initargs: tuple) -> Iterator:
    """``context.Pool(workers, initializer, initargs)``, whose start a stop signal cannot cut in half.

    A spawned worker reads its start-up data from a pipe the parent writes after starting it; Ctrl-C or
    Slurm's SIGTERM landing in between made the parent leave with that pipe empty, and the half-started
    worker printed a traceback (EOFError) under the clean "interrupted" message. While the pool starts, a
    stop signal is only noted (Python runs its handlers in the main thread, whichever thread the signal
    reached); it is raised again once every worker has its data, inside the pool's ``with``, so the pool
    is terminated on the way out as usual."""
    if threading.current_thread() is not threading.main_thread():  # handlers can only be set from there
        with context.Pool(workers, initializer, initargs) as pool:
            yield pool
        return
    noted: list[int] = []
    previous = {number: signal.signal(number, lambda signum, frame: noted.append(signum)) for number in STOP_SIGNALS}
    try:
        pool = context.Pool(workers, initializer, initargs)
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)
    with pool:
        if noted:
            signal.raise_signal(noted[0])  # its own handler now: KeyboardInterrupt for the commands
        yield pool


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
