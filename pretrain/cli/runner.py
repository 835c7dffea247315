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
import signal
import sys
from collections.abc import Callable

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
    """Run ``main`` and exit: 0 on success, 2 on bad input (message only), 130 on interrupt.

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
        if exc.errno != errno.ENOSPC:
            raise
        print(f"error: the disk is full ({exc.filename or exc}); temporary outputs were removed. "
              "Free space or choose another output folder.", file=sys.stderr)
        code = EXIT_FAILURE
    sys.exit(code)
