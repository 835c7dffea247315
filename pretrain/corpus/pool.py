"""Worker pools: started so that a signal cannot cut the start in half, and their results in input order
with a bounded number of items in flight."""

from __future__ import annotations

import multiprocessing
import signal
import threading
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager

from pretrain.corpus.types import InputError

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


class WorkerDied(InputError):
    """A worker process ended in the middle of the work (the out-of-memory killer, kill -9): its task is lost,
    and the pool would wait for it forever."""


def ordered_imap(pool, function: Callable, items: Iterable, window: int) -> Iterator:
    """Like ``Pool.imap`` but with at most ``window`` items in flight, so reading never runs ahead
    of the workers (``Pool.imap`` consumes its whole input eagerly); raises WorkerDied when one of the
    pool's workers ends (a Pool starts another in its place, and the lost task's result never comes)."""
    workers = list(pool._pool)  # the Process objects it started; Pool has no public list of them
    pending: deque = deque()
    iterator = iter(items)
    for item in iterator:
        pending.append(pool.apply_async(function, (item,)))
        if len(pending) >= window:
            break
    while pending:
        while True:
            try:
                result = pending[0].get(timeout=1.0)
                break
            except multiprocessing.TimeoutError:
                dead = next((w for w in workers if w.exitcode is not None), None)
                if dead is not None:
                    raise WorkerDied(_death(dead.exitcode)) from None
        pending.popleft()
        for item in iterator:
            pending.append(pool.apply_async(function, (item,)))
            break
        yield result


def _death(code: int) -> str:
    how = f"was killed by signal {-code}{' (SIGKILL: most often the out-of-memory killer)' if code == -9 else ''}" \
        if code < 0 else f"exited with code {code} (its error, if it could print one, is above)"
    return (f"a worker process {how} in the middle of the work; nothing was published. If memory ran out, run fewer "
            "--workers, or look for a very large document (one line of many MB): encoding takes about 300 times its "
            "size in memory.")
