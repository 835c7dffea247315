"""Memory planner: per-GPU memory of a run before launching it, and the largest micro batch that fits.

Model states follow DeepSpeed's own accounting (``estimate_zero2/3_model_states_mem_needs``), so the
two agree: with bf16/fp16 each parameter costs 2 bytes of weights, 2 (ZeRO-1/2; partitioned from
stage 2) or 4 (ZeRO-3: an fp32 partition) bytes of gradients, and 12 bytes of optimizer state (fp32
master copy + Adam's two moments; ZeRO-1/2 add their fp32 gradient partition there), divided by the
data-parallel size as the stage partitions them; ZeRO-3 also holds the largest layer gathered
(weights + gradients). fp32 runs pay 4 bytes per weight and keep the fp32 "master" copy beside them.

Activations were measured on these transformers classes with saved-tensor hooks (see
tests/test_planner.py): per layer and per token of hidden size, a GPT-2 block (with PyTorch's fused
tanh GELU; 28.1 with transformers' five-op gelu_new) and a BERT block save about 16 values with SDPA's
flash / memory-efficient kernels (1.1 more outside the layers);
eager attention adds the a x s x s attention probabilities per layer, and a materialized b x s x s mask
(eager attention, or BERT's padding mask) is kept once. With activation checkpointing only each
layer's input is kept, plus one layer recomputed at a time. The LM head adds the logits (or one chunk
of them and an fp32 weight gradient with the fused loss).
"""

from __future__ import annotations

from dataclasses import dataclass, field

GIB = 2**30
SAVED_PER_TOKEN_HIDDEN = {"gpt2": 16.1, "bert": 16.0}  # values saved per layer per (token x hidden)
SAVED_OUTSIDE_LAYERS = 1.1  # the embeddings' and the final norm's, per (token x hidden)


@dataclass
class PlanInput:
    preset: str
    vocab_size: int | None = None  # default: the published vocabulary of the family
    seq_len: int = 1024
    micro_batch: int = 8
    zero_stage: int = 3
    offload: str = "none"  # none | optimizer | all (optimizer and parameters)
    precision: str = "bf16"
    activation_checkpointing: bool = False
    attention: str = "sdpa"
    fused_loss: bool = True
    chunk_rows: int = 4096
    gpus_per_node: int = 8
    nodes: int = 1
    gpu_memory_gib: float = 80.0


@dataclass
class Plan:
    parameters: int
    largest_layer: int
    per_gpu: dict[str, float] = field(default_factory=dict)  # bytes by component
    cpu_per_node: float = 0.0

    @property
    def total(self) -> float:
        return sum(self.per_gpu.values())


PERSISTENCE_THRESHOLD = 100_000  # ZeRO-3 keeps tensors smaller than this whole on every GPU (engine.AUTO_BUCKETS)


def count_parameters(preset_name: str, vocab_size: int | None) -> tuple[int, int]:
    """(all parameters, the largest single module's) of the preset, built on the meta device."""
    total, largest, _ = parameter_sizes(preset_name, vocab_size)
    return total, largest


def parameter_sizes(preset_name: str, vocab_size: int | None) -> tuple[int, int, int]:
    """(all parameters, the largest unit ZeRO-3 gathers, those in tensors below its persistence threshold)."""
    import torch

    from pretrain.config import Config
    from pretrain.model import create_uninitialized, hf_config, hf_model_class, transformer_block_class
    from pretrain.presets import PUBLISHED_VOCAB, get_preset

    preset = get_preset(preset_name)

    class _Vocabulary:
        def __init__(self, size: int) -> None:
            self.vocab_size = size
            self.specials = type("Specials", (), {"ids": {"eod": 0, "pad": 0}})()

    config = Config()
    config.model.preset, config.model.vocab_multiple = preset_name, 64
    with torch.device("meta"):
        model = create_uninitialized(hf_model_class(preset.family, False),
                                     hf_config(preset, config, _Vocabulary(vocab_size or PUBLISHED_VOCAB[preset.family])))
    total = sum(p.numel() for p in model.parameters())
    # what ZeRO-3 gathers at once: one module's own tensors, or a whole transformer block (model.zero3_whole_blocks)
    block = transformer_block_class(preset.family)
    largest = max(sum(p.numel() for p in m.parameters(recurse=isinstance(m, block))) for m in model.modules())
    small = sum(p.numel() for p in model.parameters() if p.numel() < PERSISTENCE_THRESHOLD)
    return total, largest, small


def plan(spec: PlanInput) -> Plan:
    from pretrain.presets import PUBLISHED_VOCAB, get_preset

    preset = get_preset(spec.preset)
    vocab = spec.vocab_size or PUBLISHED_VOCAB[preset.family]
    params, largest, small = parameter_sizes(spec.preset, vocab)
    result = Plan(params, largest)
    result.per_gpu, result.cpu_per_node = model_states(params, largest, spec, small)
    result.per_gpu["activations"] = activation_bytes(spec, preset.family, preset.layers, preset.hidden, preset.heads, vocab)
    return result


def model_states(params: int, largest: int, spec: PlanInput, small: int = 0) -> tuple[dict[str, float], float]:
    """Per-GPU bytes of weights, gradients and optimizer states, and CPU bytes per node when offloading.

    ``small``: parameters in tensors ZeRO-3 keeps whole on every GPU (biases, norms), which
    DeepSpeed's estimator leaves out; reported apart as "persistent small parameters"."""
    gpus = spec.gpus_per_node * spec.nodes
    half = spec.precision in ("bf16", "fp16")
    weight = 2 if half else 4
    if spec.zero_stage == 3:
        states = {"parameters": weight * params / gpus, "gradients": 4 * params / gpus, "optimizer": 12 * params / gpus,
                  "gathered layer": 2 * weight * largest}
        if small and spec.offload != "all":
            states["persistent small parameters"] = weight * small * (1 - 1 / gpus)
    elif spec.zero_stage in (1, 2):  # the fp32 gradient partition is counted with the optimizer, as DeepSpeed does
        grads = weight * params / gpus if spec.zero_stage == 2 else weight * params
        states = {"parameters": weight * params, "gradients": grads, "optimizer": 16 * params / gpus}
    else:
        states = {"parameters": weight * params, "gradients": weight * params, "optimizer": 12 * params}
    cpu = 0.0
    if spec.offload in ("optimizer", "all") and spec.zero_stage > 0:  # gradient partitions go to the CPU too
        cpu += (states.pop("optimizer") + states.pop("gradients")) * spec.gpus_per_node
    if spec.offload == "all" and spec.zero_stage == 3:
        cpu += states.pop("parameters") * spec.gpus_per_node
    return states, cpu


def saved_in_forward(spec: PlanInput, family: str, layers: int, hidden: int, heads: int) -> float:
    """Bytes the transformer body keeps from forward for backward."""
    element = 2 if spec.precision in ("bf16", "fp16") else 4
    tokens = spec.micro_batch * spec.seq_len
    outside = SAVED_OUTSIDE_LAYERS * tokens * hidden * element
    if spec.attention == "eager" or family == "bert":
        outside += spec.seq_len * tokens * element  # the attention mask, built once and kept
    if spec.activation_checkpointing:
        return layers * tokens * hidden * element + outside  # each layer's input
    return layers * layer_activations(spec, family, hidden, heads) + outside


def layer_activations(spec: PlanInput, family: str, hidden: int, heads: int) -> float:
    element = 2 if spec.precision in ("bf16", "fp16") else 4
    tokens = spec.micro_batch * spec.seq_len
    per_layer = SAVED_PER_TOKEN_HIDDEN[family] * tokens * hidden * element
    if spec.attention == "eager":
        per_layer += heads * spec.seq_len * tokens * element
    return per_layer


def activation_bytes(spec: PlanInput, family: str, layers: int, hidden: int, heads: int, vocab: int) -> float:
    """Peak activation bytes: what forward keeps, the layer being recomputed (with checkpointing),
    and the LM head's logits."""
    total = saved_in_forward(spec, family, layers, hidden, heads)
    if spec.activation_checkpointing:
        total += layer_activations(spec, family, hidden, heads)
    tokens = spec.micro_batch * spec.seq_len
    predicted = tokens if family == "gpt2" else tokens * 0.15
    if spec.fused_loss:
        total += min(spec.chunk_rows, predicted) * vocab * 4 + vocab * hidden * 4  # a chunk of logits + fp32 dW
    else:
        total += 2 * predicted * vocab * 4  # fp32 logits and their softmax kept for backward
    return total


def largest_micro_batch(spec: PlanInput, limit: int = 1024) -> int:
    """The largest micro batch whose plan fits spec.gpu_memory_gib (0 if none does)."""
    from dataclasses import replace

    best, low, high = 0, 1, limit
    while low <= high:
        middle = (low + high) // 2
        if plan(replace(spec, micro_batch=middle)).total <= spec.gpu_memory_gib * GIB * 0.95:  # allocator slack
            best, low = middle, middle + 1
        else:
            high = middle - 1
    return best
