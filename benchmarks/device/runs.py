"""One measurement in a process of its own, for benchmarks/mfu_check.py on the device: its deadline, the
result a process printed before it hung on its way out, what a failed one says went wrong (its last lines
go to the session's log, not to a file: the device tool brings back 8 files at most), and the optimizer
pretrain.engine's log line names, this code's and the previous round's harness's alike."""

from __future__ import annotations

import json
import logging
import re
import subprocess
import sys
from pathlib import Path

# pretrain.engine's line naming the optimizer it built (this code's and the previous round's), e.g. "optimizer
# torch AdamW(fused=True) (FusedAdam unavailable: ...), bf16, micro batch ..."
OPTIMIZER_LOG = re.compile(r"DeepSpeed engine: ZeRO stage \S+, optimizer (.+), (?:bf16|fp16|fp32)[^,\n]*, micro batch")
# a line that names an exception (optionally behind torch's "[rank0]: " prefix), not a warning printed at exit
EXCEPTION_LINE = re.compile(r"^(?:\[rank\d+\]:\s*)?(\w[\w.]*(?:Error|Exception)\b.*)")
# the previous round's harness, run with pretrain.engine's INFO lines on stderr (the optimizer it chose)
PREVIOUS_RUNNER = ("import logging, runpy, sys\nengine = logging.getLogger('pretrain.engine')\n"
                   "engine.setLevel(logging.INFO)\nengine.addHandler(logging.StreamHandler(sys.stderr))\n"
                   "sys.argv = sys.argv[1:]\nrunpy.run_path(sys.argv[0], run_name='__main__')\n")


class LogLines(logging.Handler):
    """The messages one logger emits at INFO and above, kept (the root logger prints nothing here)."""

    def __init__(self, name: str) -> None:
        super().__init__(logging.INFO)
        self.lines: list[str] = []
        logging.getLogger(name).setLevel(logging.INFO)
        logging.getLogger(name).addHandler(self)

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


def optimizer_named(log: str) -> str | None:
    """The optimizer pretrain.engine's log line says it built (with the reason for a fallback), if any."""
    found = OPTIMIZER_LOG.findall(log)
    return found[-1] if found else None


def run_child(command: list[str], deadline: float, env: dict, cwd: Path | None = None) -> tuple[str, str, str | None]:
    """(stdout, stderr, how it ended: None for exit 0, "exit N" or "over its deadline"), with what a killed
    process had printed (a result printed before a hang on its way out is not lost)."""
    try:
        proc = subprocess.run(command, capture_output=True, text=True, timeout=deadline, env=env, cwd=cwd)
    except subprocess.TimeoutExpired as exc:  # POSIX: the output so far, as bytes
        stdout, stderr = (text.decode(errors="replace") if isinstance(text, bytes) else text or ""
                          for text in (exc.stdout, exc.stderr))
        return stdout, stderr, f"over its {deadline:.0f} s deadline, killed"
    return proc.stdout, proc.stderr, None if proc.returncode == 0 else f"exit {proc.returncode}"


def failure_line(stderr: str) -> str:
    """What a failed run's stderr says went wrong: its last exception line (before any "Exception ignored" of
    the interpreter's shutdown), else its last line that is no warning. Never simply the last line: a failed
    GPU run ends with NCCL's "destroy_process_group() was not called" warning, printed at exit."""
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    shutdown = next((i for i, line in enumerate(lines) if line.startswith("Exception ignored")), len(lines))
    for part in (lines[:shutdown], lines):
        named = [found.group(1) for found in map(EXCEPTION_LINE.match, part) if found]
        if named:
            return named[-1][:200]
    plain = [line for line in lines if "warning" not in line.lower()]
    return (plain or lines or ["(nothing on stderr)"])[-1][:200]


def show_tail(preset: str, variant: str, stderr: str, count: int = 30) -> None:
    """A failed run's last stderr lines, on this script's stderr (the session's log, not a file of its own:
    the device tool brings back 8 files at most)."""
    lines = stderr.rstrip().splitlines()[-count:]
    print(f"--- {preset} {variant} failed; the last {len(lines)} lines of its stderr:", *lines, "---", sep="\n",
          file=sys.stderr, flush=True)


def kept_after(record: dict, ended: str | None) -> dict:
    """A run's printed record, marked where the run then hung on its way out and was killed at its deadline."""
    return {**record, "exit": f"stuck after its result: {ended}"} if ended and "deadline" in ended else record


def child_record(stdout: str, stderr: str) -> dict | None:
    """The record a case's process printed, with the recompiles its log shows; None if it printed none."""
    found = [json.loads(line[7:]) for line in stdout.splitlines() if line.startswith("RESULT ")]
    return {**found[0], "recompiles": stderr.count("Recompiling function")} if found else None
