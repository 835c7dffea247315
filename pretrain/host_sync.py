"""Find host synchronisation on the CPU: everything that, on a GPU, makes the host wait for the device.

On a GPU the host waits when it reads a value (``.item()``, ``bool(t)``, ``float(t)``, ``torch.equal``,
``torch.allclose``), copies a tensor to the host (``.cpu()``, ``.tolist()``, ``.numpy()``, ``.to("cpu")``),
runs an operator whose output size depends on the data (``nonzero``, boolean-mask indexing,
``masked_select``, ``unique``), or calls a synchronize (``torch.cuda.synchronize()``, an event's or a
stream's, DeepSpeed's accelerator's).
``torch.cuda.set_sync_debug_mode`` sees only the first three kinds, and only on a GPU; ``HostSyncs``
sees all of them in a CPU run (an operator mode for what reaches the dispatcher, patched methods for
the copies and synchronizes that do not), so CI can prove a step is free of them; on a GPU it adds the
explicit synchronizes to what set_sync_debug_mode reports (tests/probe.py, benchmarks/mfu_check.py)."""

from __future__ import annotations

import traceback

import torch
from torch.utils._python_dispatch import TorchDispatchMode

aten = torch.ops.aten
SYNCING = {aten._local_scalar_dense.default, aten.nonzero.default, aten.masked_select.default,
           aten.unique_dim.default, aten._unique2.default, aten.unique_consecutive.default,
           aten.repeat_interleave.Tensor,
           aten.equal.default, aten.allclose.default}  # these two return a Python bool: read on the host
COPIES_TO_HOST = ("cpu", "tolist", "numpy")


def _synchronizers() -> list[tuple[object, str]]:
    """(owner, attribute) of every synchronize a training step could call, on this machine's accelerator."""
    found: list[tuple[object, str]] = [(torch.cuda, "synchronize"), (torch.cuda.Event, "synchronize"),
                                       (torch.cuda.Stream, "synchronize"), (torch.cpu, "synchronize")]
    try:
        from deepspeed.accelerator import get_accelerator

        found.append((type(get_accelerator()), "synchronize"))
    except ImportError:  # pragma: no cover - DeepSpeed is a dependency
        pass
    return found


def _targets_host(args, kwargs) -> bool:
    """Whether ``Tensor.to(*args, **kwargs)`` copies to the host."""
    candidates = [*args, kwargs.get("device")]
    for value in candidates:
        if isinstance(value, torch.Tensor):
            return value.device.type == "cpu"
        if isinstance(value, (str, torch.device)) and torch.device(value).type == "cpu":
            return True
    return False


def _caller() -> str:
    """Where the sync came from: the innermost frame outside torch and this module."""
    for frame in reversed(traceback.extract_stack()[:-2]):
        path = frame.filename.replace("\\", "/")
        if not path.endswith("pretrain/host_sync.py") and "/torch/" not in path:
            return f"{'/'.join(path.split('/')[-3:])}:{frame.lineno} {frame.name}"
    return "?"


def _immediate_caller() -> str:
    """The file of the innermost frame outside this module."""
    for frame in reversed(traceback.extract_stack()[:-2]):
        path = frame.filename.replace("\\", "/")
        if not path.endswith("pretrain/host_sync.py"):
            return path
    return "?"


class HostSyncs(TorchDispatchMode):
    """Records, in ``found``, everything in the block that would make the host wait for a GPU.

    ``host_tensors``: tensors that live on the host in a GPU run too (the batch before it is copied over;
    torch optimizers' step counts unless fused), whose reads and copies cost nothing there."""

    def __init__(self, host_tensors=()) -> None:
        super().__init__()
        self.found: list[str] = []
        self.host = {t.data_ptr() for t in host_tensors}
        self._patched: list[tuple[object, str, object]] = []

    def _on_host(self, tensor: torch.Tensor) -> bool:
        return tensor.data_ptr() in self.host

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is aten._local_scalar_dense.default and self._on_host(args[0]):
            pass
        elif func in SYNCING:
            self.found.append(f"{func} at {_caller()}")
        elif func is aten.index.Tensor and any(t is not None and t.dtype == torch.bool for t in args[1]):
            self.found.append(f"boolean-mask indexing (aten.index with a bool index) at {_caller()}")
        return func(*args, **kwargs)

    def __enter__(self):
        for name in COPIES_TO_HOST:
            self._patch(torch.Tensor, name, self._copy_watcher(name))
        self._patch(torch.Tensor, "to", self._to_watcher())
        for owner, name in _synchronizers():
            self._patch(owner, name, self._sync_watcher(owner, name))
        return super().__enter__()

    def __exit__(self, *exc):
        for owner, name, original in reversed(self._patched):
            if original is None:
                delattr(owner, name)  # it was inherited: the base class's comes back
            else:
                setattr(owner, name, original)
        self._patched.clear()
        return super().__exit__(*exc)

    def _patch(self, owner, name: str, replacement) -> None:
        own = name in getattr(owner, "__dict__", {}) or not isinstance(owner, type)
        self._patched.append((owner, name, getattr(owner, name) if own else None))
        setattr(owner, name, replacement)

    def _copy_watcher(self, name: str):
        original = getattr(torch.Tensor, name)
        syncs = self

        def watched(tensor, *args, **kwargs):
            if not syncs._on_host(tensor):
                syncs.found.append(f"Tensor.{name}() (a copy to the host) at {_caller()}")
            return original(tensor, *args, **kwargs)

        return watched

    def _to_watcher(self):
        original = torch.Tensor.to
        syncs = self

        def watched(tensor, *args, **kwargs):
            # only where the target device is this project's choice: torch and DeepSpeed move tensors to the
            # device they are on or to the accelerator's, which is the host in a CPU run and not on a GPU
            # (their real copies to the host go through .cpu(), .item() and the like, seen everywhere)
            if (_targets_host(args, kwargs) and not syncs._on_host(tensor)
                    and not any(part in _immediate_caller() for part in ("/deepspeed/", "/torch/"))):
                syncs.found.append(f"Tensor.to(cpu) (a copy to the host) at {_caller()}")
            return original(tensor, *args, **kwargs)

        return watched

    def _sync_watcher(self, owner, name: str):
        original = getattr(owner, name)
        label = f"{getattr(owner, '__name__', type(owner).__name__)}.{name}()"
        syncs = self

        def watched(*args, **kwargs):
            syncs.found.append(f"{label} (an explicit synchronize) at {_caller()}")
            return original(*args, **kwargs)

        return watched
