"""``torch.compile`` with a logged fallback to eager: a run never dies because a kernel did not compile."""

from __future__ import annotations

import logging
from collections.abc import Callable

import torch

log = logging.getLogger(__name__)


def _compile_errors() -> tuple[type[BaseException], ...]:
    """Exceptions that mean "compiling failed" (inductor's are re-raised wrapped in dynamo's)."""
    errors: list[type[BaseException]] = [torch._dynamo.exc.TorchDynamoException]
    try:
        from torch._inductor.exc import InductorError

        errors.append(InductorError)
    except ImportError:  # pragma: no cover - older torch
        pass
    return tuple(errors)


class CompiledOrEager:
    """Call ``torch.compile(function)``; if compiling fails, say why once and call ``function`` from then on.

    Compilation happens inside calls (the first one, and later ones that recompile, e.g. for eval mode),
    before anything runs, so retrying the same call eagerly repeats no work. Any exception on the first
    call counts as a compile failure (a missing Triton, no C++ compiler); later, only dynamo's and
    inductor's own errors do, so a real error (out of memory) still surfaces.
    """

    def __init__(self, function: Callable, name: str, **options) -> None:
        self.eager = function
        self.compiled = torch.compile(function, **options)
        self.name = name
        self.failed = False
        self._succeeded = False

    def __call__(self, *args, **kwargs):
        if self.failed:
            return self.eager(*args, **kwargs)
        try:
            result = self.compiled(*args, **kwargs)
        except Exception as exc:  # noqa: BLE001 - decide below whether this was compiling
            if self._succeeded and not isinstance(exc, _compile_errors()):
                raise
            self.failed = True
            first = (str(exc).strip().splitlines() or [""])[0]
            log.warning("torch.compile of %s failed (%s: %s): running it eager", self.name, type(exc).__name__,
                        first[:200])
            return self.eager(*args, **kwargs)
        self._succeeded = True
        return result
