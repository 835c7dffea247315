"""Find host synchronisation on the CPU: the operators that, on a GPU, make the host wait for the device.

On a GPU, reading a value (``.item()``, ``bool(t)``, ``float(t)``) or an operator whose output size
depends on the data (``nonzero``, boolean-mask indexing, ``masked_select``, ``unique``) blocks until
the GPU has caught up. ``torch.cuda.set_sync_debug_mode`` finds them on a GPU; this dispatch mode finds
the same operators in CPU runs, so CI can prove a step is free of them."""

from __future__ import annotations

import torch
from torch.utils._python_dispatch import TorchDispatchMode

aten = torch.ops.aten
SYNCING = {aten._local_scalar_dense.default, aten.nonzero.default, aten.masked_select.default,
           aten.unique_dim.default, aten._unique2.default, aten.unique_consecutive.default,
           aten.repeat_interleave.Tensor}


class HostSyncs(TorchDispatchMode):
    """Records every operator in the block that would synchronise the host with a GPU.

    ``host_tensors``: tensors that live on the host in a GPU run too (torch optimizers count their steps in
    CPU tensors unless fused), whose reads cost nothing there."""

    def __init__(self, host_tensors=()) -> None:
        super().__init__()
        self.found: list[str] = []
        self.host = {t.data_ptr() for t in host_tensors}

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is aten._local_scalar_dense.default and args[0].data_ptr() in self.host:
            pass
        elif func in SYNCING:
            self.found.append(str(func))
        elif func is aten.index.Tensor and any(t is not None and t.dtype == torch.bool for t in args[1]):
            self.found.append("boolean-mask indexing (aten.index with a bool index)")
        return func(*args, **kwargs)
