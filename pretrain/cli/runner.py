"""What every command does around its work: logging, clean errors, cleanup on SIGTERM, exit codes.

Exit codes, the same for every ``pretrain-*`` command:

    0    done
    1    failure (a bug, a crash, a diverged run)
    2    bad input or configuration: the message says what to fix (argparse's usage errors are 2 too)
    75   stopped early and saved (training: a signal, run.dir/STOP, train.exit_*); run it again to resume
    130  interrupted (Ctrl-C, SIGTERM) with nothing published
"""

from __future__ import annotations

import errno
import logging
import os
import re
import signal
import sys
from collections.abc import Callable
from pathlib import Path

EXIT_FAILURE = 1
EXIT_BAD_INPUT = 2
EXIT_STOPPED = 75
EXIT_INTERRUPTED = 130


class UserError(Exception):
    """An error whose message is the whole story: print it, no traceback."""


def _user_errors() -> tuple[type[BaseException], ...]:
    from pretrain.config import ConfigError
    from pretrain.corpus.types import InputError
    from pretrain.data.indexed import IndexFormatError
    from pretrain.data.preprocess import PreprocessError
    from pretrain.tokenization import TokenizerError

    return UserError, ConfigError, IndexFormatError, PreprocessError, InputError, TokenizerError


def _terminate(signum, frame) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def run(main: Callable[[], int | None]) -> None:
    """Run ``main`` and exit: 0 on success, 2 on bad input or a path that cannot be used (read-only, no
    permission, a file where a folder must be: message only), 1 on a full disk, 130 on interrupt.

    SIGTERM (what Slurm and ``kill`` send) is turned into KeyboardInterrupt so that temporary
    outputs are removed exactly as on Ctrl-C.
    """
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s", datefmt="%H:%M:%S")
    signal.signal(signal.SIGTERM, _terminate)
    try:
        code = main() or 0
    except KeyboardInterrupt:
        print("\ninterrupted: temporary outputs removed, nothing was published", file=sys.stderr)
        code = EXIT_INTERRUPTED
    except _user_errors() as exc:
        print(f"error: {exc}", file=sys.stderr)
        code = EXIT_BAD_INPUT
    except OSError as exc:
        if exc.errno == errno.ENOSPC:
            print(f"error: the disk is full ({exc.filename or exc}); temporary outputs were removed. "
                  "Free space or choose another output folder.", file=sys.stderr)
            code = EXIT_FAILURE
        elif exc.errno in _PATH_ERRORS:
            print(f"error: {path_problem(exc)}", file=sys.stderr)
            code = EXIT_BAD_INPUT
        else:
            raise
    sys.exit(code)


# what a path the user chose can be wrong in: answered with the path and the cause, not a traceback
_PATH_ERRORS = frozenset({errno.EROFS, errno.EACCES, errno.EPERM, errno.ENOTDIR, errno.EEXIST, errno.EISDIR})


def path_problem(exc: OSError) -> str:
    """What is wrong with the path ``exc`` names and what to do: a read-only file system, no permission, a file
    where a folder must be (or a folder where a file must be)."""
    path = re.sub(r"\.tmp-\d+$", "", os.fsdecode(exc.filename)) if exc.filename is not None else None
    if path is None:
        return f"{exc}: check the output location and its permissions."
    if exc.errno == errno.EROFS:
        return f"cannot write {path}: the file system is read-only. Choose an output location on a writable one."
    if exc.errno in (errno.EACCES, errno.EPERM):
        return f"cannot use {path}: permission denied. Fix its (or its folder's) permissions, or choose another location."
    if exc.errno == errno.EISDIR:
        return f"cannot write {path}: it is a folder. Choose another output name, or move the folder away."
    blocker = _file_in_the_way(path)
    if blocker is not None:  # ENOTDIR, EEXIST: a regular file where the path needs a folder
        return (f"cannot use {path}: {blocker} is a file, not a folder. Choose another output location, or move "
                f"{blocker} away.")
    return f"cannot use {path}: {exc.strerror}."


def _file_in_the_way(path: str) -> str | None:
    """The first part of ``path`` (or the path itself) that exists and is not a folder, if any."""
    for part in reversed([Path(path), *Path(path).parents]):
        if part.exists() and not part.is_dir():
            return str(part)
    return None
