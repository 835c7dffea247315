"""The trainer's evaluation per blend source: loss and bits per byte of each of ``data.prefixes``.

The model returns one mean loss per micro batch, so each micro batch holds one source's samples
only: the samples of source ``d`` (its positions in the valid blend, in order) are cut into blocks of
``micro_batch x ranks``, each rank taking its slice of every block, as the training sampler does. A
source's last block may be short: a rank whose slice is then empty still runs one forward pass (under
ZeRO-3 every forward gathers parameters with all ranks, so all must run as many) on a stand-in sample
whose result it drops. The union over sources is exactly the split's samples, so the overall loss is
the whole split's, as before.

Per source the device accumulates loss x labelled tokens, labelled tokens and, for causal LMs, the
UTF-8 bytes the predicted tokens stand for (``token_bytes``'s table summed over the targets); all is
read back once, after the evaluation. Bits per byte = nats / ln 2 / bytes, end-of-document
predictions included in the nats (they stand for no bytes). Masked LMs get no bits per byte: their
loss covers the masked tokens only, with the rest of the text given, which is not a code length.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch

from pretrain.data.collate import collate


@dataclass(frozen=True)
class EvalBatch:
    source: int
    samples: list[int]  # positions in the valid dataset
    counted: bool  # False: a stand-in so that every rank runs the same forward passes; its result is dropped


def source_names(prefixes: list[str]) -> list[str]:
    """Each prefix's file name (``ko_text_document``); a name used twice gets ``#2``, ``#3``..."""
    names: list[str] = []
    for prefix in prefixes:
        name = os.path.basename(str(prefix).rstrip("/")) or str(prefix)
        candidate, copy = name, 1
        while candidate in names:
            copy += 1
            candidate = f"{name}#{copy}"
        names.append(candidate)
    return names


def source_batches(owners: np.ndarray, sources: int, micro_batch: int, rank: int, world_size: int) -> list[EvalBatch]:
    """This rank's micro batches, source after source. ``owners[i]`` is the source of the valid
    dataset's sample ``i`` (a blend's dataset index; all zeros for one prefix)."""
    block = micro_batch * world_size
    batches = []
    for source in range(sources):
        positions = np.flatnonzero(owners == source)
        for start in range(0, len(positions), block):
            mine = positions[start + rank * micro_batch : start + (rank + 1) * micro_batch]
            if len(mine):
                batches.append(EvalBatch(source, [int(i) for i in mine], True))
            else:
                batches.append(EvalBatch(source, [int(positions[start])], False))
    return batches


class SourceEvaluation:
    """Everything an evaluation needs that does not change between evaluations: the source names,
    this rank's batches and the byte table on the device. ``zeros`` -> ``add`` per micro batch ->
    ``figures``."""

    def __init__(self, valid_data, names: list[str], byte_table: np.ndarray, micro_batch: int, rank: int,
                 world_size: int, device: torch.device) -> None:
        owners = getattr(valid_data, "dataset_index", None)  # a BlendedDataset's; one prefix: all from source 0
        owners = np.zeros(len(valid_data), dtype=np.int64) if owners is None else np.asarray(owners)
        self.valid_data, self.names, self.device = valid_data, names, device
        self.batches = source_batches(owners[: len(valid_data)], len(names), micro_batch, rank, world_size)
        self.byte_table = torch.as_tensor(byte_table, dtype=torch.float64, device=device)

    def zeros(self) -> torch.Tensor:
        """Per source: loss x labelled tokens, labelled tokens, bytes of the predicted tokens."""
        return torch.zeros(len(self.names), 3, dtype=torch.float64, device=self.device)

    def loader(self) -> Iterator[tuple[EvalBatch, dict]]:
        """(batch description, collated batch) for this rank, in order; read in this process (no workers)."""
        loader = torch.utils.data.DataLoader(self.valid_data, batch_sampler=[b.samples for b in self.batches],
                                             num_workers=0, collate_fn=collate, pin_memory=self.device.type == "cuda")
        return zip(self.batches, loader)

    def add(self, sums: torch.Tensor, batch: EvalBatch, inputs: dict, loss: torch.Tensor, count: torch.Tensor) -> None:
        """Add one micro batch's results on the device (nothing read back)."""
        if not batch.counted:
            return
        covered = (self.byte_table[inputs["tokens"][:, 1:]].sum() if "tokens" in inputs  # causal LM: the targets
                   else torch.zeros((), dtype=torch.float64, device=self.device))
        sums[batch.source] += torch.stack([loss.double() * count, count.double(), covered])

    def figures(self, sums: torch.Tensor) -> dict[str, float]:
        """Summed over ranks and read back: eval_loss, eval_ppl, eval_bpb (causal LMs), and per source
        ``eval_loss/NAME`` and ``eval_bpb/NAME``."""
        if torch.distributed.is_initialized():
            torch.distributed.all_reduce(sums)
        rows = sums.tolist()
        nats, tokens, covered = (sum(column) for column in zip(*rows))
        loss = nats / max(tokens, 1.0)
        out = {"eval_loss": loss, "eval_ppl": math.exp(min(loss, 50.0))}
        if covered:
            out["eval_bpb"] = nats / math.log(2) / covered
        for name, (source_nats, source_tokens, source_bytes) in zip(self.names, rows):
            if source_tokens:  # a source with no valid sample (a tiny weight) has no figures
                out[f"eval_loss/{name}"] = source_nats / source_tokens
                if source_bytes:
                    out[f"eval_bpb/{name}"] = source_nats / math.log(2) / source_bytes
        return out

    def describe(self, figures: dict[str, float]) -> list[str]:
        """Log lines: the overall figures, then one per source when there are several."""
        bpb = f" | eval bpb {figures['eval_bpb']:.4f}" if "eval_bpb" in figures else ""
        lines = [f"eval loss {figures['eval_loss']:.4f} | eval ppl {figures['eval_ppl']:.2f}{bpb}"]
        if len(self.names) > 1:
            for name in self.names:
                if f"eval_loss/{name}" in figures:
                    bpb = f", bpb {figures[f'eval_bpb/{name}']:.4f}" if f"eval_bpb/{name}" in figures else ""
                    lines.append(f"  {name}: eval loss {figures[f'eval_loss/{name}']:.4f}{bpb}")
        return lines
