"""Memory planner: per-GPU memory of a run before launching it, and the largest micro batch that fits.

Model states follow DeepSpeed's own accounting (``estimate_zero2/3_model_states_mem_needs``), so the
two agree: with bf16/fp16 under ZeRO each parameter costs 2 bytes of weights, 2 (ZeRO-1/2; partitioned
from stage 2) or 4 (ZeRO-3: an fp32 partition) bytes of gradients, and 12 bytes of optimizer state
(fp32 master copy + Adam's two moments; ZeRO-1/2 add their fp32 gradient partition there), divided by
the data-parallel size as the stage partitions them; ZeRO-3 also holds the largest unit it gathers at
once (a whole transformer block with ``model.zero3_whole_blocks``). Without ZeRO (stage 0), bf16 runs
keep fp32 weights under autocast: 4 bytes of weights, 4 of gradients, 8 of Adam moments, and the bf16
copies autocast makes for the matmuls (2). fp32 runs: 4 + 4 + 8 without ZeRO, an fp32 master copy
beside the partition with it.

Activations were measured on the transformers classes with saved-tensor hooks (tests/test_planner.py);
each family says what its block saves for backward per token in each precision mode
(pretrain/model/families/): with SDPA's flash / memory-efficient kernels a GPT-2 or BERT block saves 32.25
bytes per (token x hidden) with half-precision weights, 39.4 (GPT-2) / 43.4 (BERT) under bf16 autocast (the
residual stream and the norms stay fp32), 64.4 in fp32; a Llama block counts its query width (heads x
head_dim), its key/value width and its gated MLP's width apart. Eager attention adds the heads x seq
attention probabilities per token, and a padding or document mask one byte per key per token. A block that
recomputes keeps only its input, and one block is recomputed at a time. The LM head adds the logits (one
chunk of them with the fused head).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pretrain.presets import Preset

GIB = 2**30
BLOCK_INPUT = {"half": 2, "autocast": 4, "fp32": 4}  # what a recomputing block keeps, per (token x hidden)


def persistence_threshold(block_parameters: int) -> int:
    """ZeRO-3 keeps tensors smaller than this whole on every GPU (DeepSpeed's default is 100k; a tenth of
    a block for small models, whose every tensor would be under it and nothing would be partitioned)."""
    return min(100_000, block_parameters // 10)

CHUNK_ROWS = 8192  # the fused LM head's rows per chunk (pretrain.model.head.CHUNK_ROWS)


@dataclass
class PlanInput:
    preset: str | Preset  # a name, or a shape (a model.init_from folder's)
    vocab_size: int | None = None  # default: the published vocabulary of the preset
    seq_len: int = 1024
    micro_batch: int = 8
    zero_stage: int = 3
    offload: str = "none"  # none | optimizer | all (optimizer and parameters)
    precision: str = "bf16"
    recompute_layers: int = 0  # blocks that recompute their activations (all of them: full checkpointing)
    attention: str = "sdpa"
    fused_loss: bool = True
    predicted_per_sample: int | None = None  # MLM: positions the head sees per sample (default 15% of seq_len)
    gpus_per_node: int = 8
    nodes: int = 1
    gpu_memory_gib: float = 80.0
    document_mask: bool = False  # packed documents masked: SDPA keeps a [seq x seq] mask per sample
    tie_embeddings: bool | None = None  # default: the preset's


@dataclass
class Plan:
    parameters: int
    largest_layer: int
    per_gpu: dict[str, float] = field(default_factory=dict)  # bytes by component
    cpu_per_node: float = 0.0

    @property
    def total(self) -> float:
        return sum(self.per_gpu.values())


def precision_mode(precision: str, zero_stage: int) -> str:
    """How a run holds its weights: "autocast" (fp32 weights, bf16 matmuls: bf16 without ZeRO), "half"
    (bf16/fp16 weights with an fp32 master copy), or "fp32"."""
    if precision == "fp32":
        return "fp32"
    return "autocast" if precision == "bf16" and zero_stage == 0 else "half"


@functools.lru_cache(maxsize=32)
def parameter_sizes(preset_name: str | Preset, vocab_size: int | None,
                    tie_embeddings: bool | None = None) -> tuple[int, int, int]:
    """(all parameters, the largest unit ZeRO-3 gathers, those in tensors below its persistence threshold)."""
    import torch

    from pretrain.model.families import get_family
    from pretrain.model.hf import create_uninitialized, padded_vocab_size

    shape = preset_shape(preset_name, tie_embeddings)
    family = get_family(shape.family)
    vocab = padded_vocab_size(vocab_size or shape.published_vocab, 64)
    with torch.device("meta"):
        model = create_uninitialized(family.model_class(False), family.hf_config(shape, vocab, {}))
    total = sum(p.numel() for p in model.parameters())
    # what ZeRO-3 gathers at once: one module's own tensors, or a whole transformer block (model.zero3_whole_blocks)
    block = family.block_class()
    largest = max(sum(p.numel() for p in m.parameters(recurse=isinstance(m, block))) for m in model.modules())
    small = sum(p.numel() for p in model.parameters() if p.numel() < persistence_threshold(largest))
    return total, largest, small


def preset_shape(preset_name: str | Preset, tie_embeddings: bool | None = None, **dimensions: int):
    """The preset, with its embedding untied or tied as asked and any dimensions replaced (``layers``,
    ``hidden``, ``heads``: the tests measure shallower and narrower models)."""
    from pretrain.presets import get_preset

    shape = get_preset(preset_name)
    changes = {key: value for key, value in dimensions.items() if value is not None}
    if tie_embeddings is not None:
        changes["tie_embeddings"] = tie_embeddings
    return replace(shape, **changes) if changes else shape


def count_parameters(preset_name: str, vocab_size: int | None) -> tuple[int, int]:
    """(all parameters, the largest unit ZeRO-3 gathers) of the preset, built on the meta device."""
    total, largest, _ = parameter_sizes(preset_name, vocab_size)
    return total, largest


def plan(spec: PlanInput, sizes: tuple[int, int, int] | None = None) -> Plan:
    """The per-GPU memory of ``spec``; ``sizes`` (from ``parameter_sizes``) saves rebuilding the model."""
    shape = preset_shape(spec.preset, spec.tie_embeddings)
    vocab = spec.vocab_size or shape.published_vocab
    params, largest, small = sizes or parameter_sizes(spec.preset, vocab, spec.tie_embeddings)
    result = Plan(params, largest)
    result.per_gpu, result.cpu_per_node = model_states(params, largest, spec, small)
    result.per_gpu["activations"] = activation_bytes(spec, shape.family, shape.layers, shape.hidden, shape.heads, vocab)
    return result


def model_states(params: int, largest: int, spec: PlanInput, small: int = 0) -> tuple[dict[str, float], float]:
    """Per-GPU bytes of weights, gradients and optimizer states, and CPU bytes per node when offloading.

    ``small``: parameters in tensors ZeRO-3 keeps whole on every GPU (biases, norms; measured: beside their
    partitions, not instead of them), which DeepSpeed's estimator leaves out; reported apart as "persistent
    small parameters"."""
    gpus = spec.gpus_per_node * spec.nodes
    mode = precision_mode(spec.precision, spec.zero_stage)
    weight = 2 if mode == "half" else 4
    if spec.zero_stage == 3:
        states = {"parameters": weight * params / gpus, "gradients": 4 * params / gpus, "optimizer": 12 * params / gpus,
                  "gathered layer": 2 * weight * largest}
        if small and spec.offload != "all":
            states["persistent small parameters"] = weight * small  # whole, beside their partitions
    elif spec.zero_stage in (1, 2):  # the fp32 gradient partition is counted with the optimizer, as DeepSpeed does
        grads = weight * params / gpus if spec.zero_stage == 2 else weight * params
        states = {"parameters": weight * params, "gradients": grads, "optimizer": 16 * params / gpus}
    elif mode == "half":  # DeepSpeed's fp16 optimizer: half weights and gradients, fp32 master + moments
        states = {"parameters": 2 * params, "gradients": 2 * params, "optimizer": 12 * params}
    else:  # the optimizer works on the fp32 weights themselves
        states = {"parameters": 4 * params, "gradients": 4 * params, "optimizer": 8 * params}
        if mode == "autocast":
            states["bf16 weight copies"] = 2 * params
    cpu = 0.0
    if spec.offload in ("optimizer", "all") and spec.zero_stage > 0:  # gradient partitions go to the CPU too
        cpu += (states.pop("optimizer") + states.pop("gradients")) * spec.gpus_per_node
    if spec.offload == "all" and spec.zero_stage == 3:
        cpu += states.pop("parameters") * spec.gpus_per_node
    return states, cpu


def layer_activations(spec: PlanInput, family: str, hidden: int, heads: int) -> float:
    """Bytes one block saves for backward (``hidden`` and ``heads`` replace the preset's)."""
    from pretrain.model.families import get_family

    mode = precision_mode(spec.precision, spec.zero_stage)
    tokens = spec.micro_batch * spec.seq_len
    shape = preset_shape(spec.preset, hidden=hidden, heads=heads)
    spec_family = get_family(family)
    masked = spec.document_mask or spec.attention == "eager"
    per_layer = spec_family.saved_per_token(shape, mode, spec.attention, masked) * tokens
    if spec.attention == "eager":
        per_layer += spec_family.attention_probability_bytes(mode) * heads * spec.seq_len * tokens
    return per_layer


def saved_in_forward(spec: PlanInput, family: str, layers: int, hidden: int, heads: int) -> float:
    """Bytes the transformer body keeps from forward for backward (``layers``, ``hidden`` and ``heads`` replace
    the preset's)."""
    from pretrain.model.families import get_family

    spec_family = get_family(family)
    mode = precision_mode(spec.precision, spec.zero_stage)
    tokens = spec.micro_batch * spec.seq_len
    shape = preset_shape(spec.preset, hidden=hidden, heads=heads)
    outside = spec_family.saved_outside_per_token(shape, mode, spec.document_mask) * tokens
    # a padding or document mask, built once and kept
    outside += spec_family.mask_bytes(spec.attention, spec.document_mask, mode) * spec.seq_len * tokens
    recomputing = min(max(spec.recompute_layers, 0), layers)
    return (recomputing * BLOCK_INPUT[mode] * tokens * hidden
            + (layers - recomputing) * layer_activations(spec, family, hidden, heads) + outside)


def activation_bytes(spec: PlanInput, family: str, layers: int, hidden: int, heads: int, vocab: int) -> float:
    """Peak activation bytes: what forward keeps, the block being recomputed, and the LM head's logits."""
    from pretrain.presets import FAMILIES

    total = saved_in_forward(spec, family, layers, hidden, heads)
    if spec.recompute_layers > 0:
        total += layer_activations(spec, family, hidden, heads)
    every_token = FAMILIES[family].objective == "clm"
    predicted = spec.micro_batch * (spec.seq_len if every_token else
                                    spec.predicted_per_sample or round(0.15 * spec.seq_len))
    compute = 4 if spec.precision == "fp32" else 2
    if spec.fused_loss:  # one chunk of logits (+ fp32 softmax in the eager kernel) and the weight's gradient
        total += min(CHUNK_ROWS, predicted) * vocab * (compute + 4) + vocab * hidden * compute
    else:
        total += predicted * vocab * (compute + 2 * 4)  # logits, their fp32 copy and softmax kept for backward
    return total


def largest_micro_batch(spec: PlanInput, limit: int = 1024, usable: float = 0.95) -> int:
    """The largest micro batch whose plan fits ``usable`` x spec.gpu_memory_gib (0 if none does)."""
    sizes = parameter_sizes(spec.preset, spec.vocab_size or preset_shape(spec.preset).published_vocab,
                            spec.tie_embeddings)
    best, low, high = 0, 1, limit
    while low <= high:
        middle = (low + high) // 2
        if plan(replace(spec, micro_batch=middle), sizes).total <= spec.gpu_memory_gib * GIB * usable:
            best, low = middle, middle + 1
        else:
            high = middle - 1
    return best
