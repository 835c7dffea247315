"""``torch.compile`` with a logged fallback to eager: a run never dies because a kernel did not compile."""

from __future__ import annotations

import contextlib
import functools
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


def _backward_compiled_with_forward():
    """AOTAutograd compiles a graph's backward at its first backward call, by default: a failure there would
    surface in ``engine.backward``, where nothing can fall back. This makes it compile with the forward,
    inside the call that can (where this torch has the switch)."""
    config = torch._functorch.config
    if hasattr(config, "force_non_lazy_backward_lowering"):  # torch 2.11 (the GPU image's) and 2.13 have it
        return config.patch(force_non_lazy_backward_lowering=True)
    _say_the_backward_compiles_lazily()
    return contextlib.nullcontext()


@functools.cache
def _say_the_backward_compiles_lazily() -> None:
    log.warning("torch %s compiles a block's backward at the first backward pass, outside the fallback to eager: a "
                "backward that fails to compile would stop the run (upgrade torch, or model.compile=false)",
                torch.__version__)


class CompiledOrEager:
    """Call ``torch.compile(function)``; if compiling fails, say why once and call ``function`` from then on.

    Compilation happens inside calls: the first call with gradients (the training graph, its backward
    compiled at once), the first without (evaluation), and later ones that recompile. Any exception on
    the first call of each kind counts as a compile failure (a missing Triton, no C++ compiler, a
    backward that does not lower); later, only dynamo's and inductor's own errors do, so a real error
    (out of memory) still surfaces. Retrying the failed call eagerly repeats no work: nothing ran yet.
    """

    def __init__(self, function: Callable, name: str, **options) -> None:
        self.eager = function
        self.name = name
        self.failed = False
        self._ran_with_grad: set[bool] = set()  # the grad modes whose first call compiled and ran
        try:
            self.compiled = torch.compile(function, **options)
        except Exception as exc:  # noqa: BLE001 - an unknown backend, a torch without dynamo support
            self._fall_back(exc)

    def __call__(self, *args, **kwargs):
        if self.failed:
            return self.eager(*args, **kwargs)
        mode = torch.is_grad_enabled()
        try:
            with _backward_compiled_with_forward():
                result = self.compiled(*args, **kwargs)
        except Exception as exc:  # noqa: BLE001 - decide below whether this was compiling
            if mode in self._ran_with_grad and not isinstance(exc, _compile_errors()):
                raise
            self._fall_back(exc)
            return self.eager(*args, **kwargs)
        self._ran_with_grad.add(mode)
        return result

    def _fall_back(self, exc: BaseException) -> None:
        self.failed = True
        first = (str(exc).strip().splitlines() or [""])[0]
        log.warning("torch.compile of %s failed (%s: %s): running it eager", self.name, type(exc).__name__, first[:200])
