"""A progress line for long offline jobs: throughput, counts and ETA.

On a terminal it redraws one line; in a log file (Slurm jobs) it prints a line every ``interval``
seconds, so logs stay readable.
"""

from __future__ import annotations

import sys
import time
from typing import TextIO


def _duration(seconds: float) -> str:
    seconds = int(max(seconds, 0))
    return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


class Progress:
    def __init__(self, total_bytes: int, enabled: bool = True, stream: TextIO | None = None,
                 interval: float | None = None) -> None:
        self.stream = stream or sys.stderr
        self.enabled = enabled
        self.tty = self.stream.isatty()
        self.interval = interval if interval is not None else (0.25 if self.tty else 30.0)
        self.total = max(total_bytes, 1)
        self.done = self.text = self.docs = self.tokens = 0
        self.start = self.last = time.perf_counter()

    def update(self, disk_bytes: int, text_bytes: int, docs: int, tokens: int) -> None:
        self.done += disk_bytes
        self.text += text_bytes
        self.docs += docs
        self.tokens += tokens
        now = time.perf_counter()
        if self.enabled and now - self.last >= self.interval:
            self.last = now
            self._draw(now)

    def line(self, now: float | None = None) -> str:
        elapsed = max((now or time.perf_counter()) - self.start, 1e-9)
        fraction = min(self.done / self.total, 1.0)
        eta = elapsed * (1 - fraction) / fraction if fraction > 0 else 0.0
        return (f"[{100 * fraction:5.1f}%] {self.text / 1e6:,.1f} MB | {self.text / elapsed / 1e6:.2f} MB/s | "
                f"{self.docs / elapsed:,.0f} docs/s | {self.tokens / elapsed / 1e3:,.0f}k tok/s | "
                f"elapsed {_duration(elapsed)} | ETA {_duration(eta)}")

    def _draw(self, now: float) -> None:
        if self.tty:
            self.stream.write("\r" + self.line(now) + "\033[K")
        else:
            self.stream.write(self.line(now) + "\n")
        self.stream.flush()

    def close(self) -> None:
        if self.enabled:
            self._draw(time.perf_counter())
            if self.tty:
                self.stream.write("\n")
            self.stream.flush()
