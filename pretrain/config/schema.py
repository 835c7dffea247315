"""The run configuration's schema: typed dataclasses with a docstring per field (the YAML files in
pretrain/configs/ mirror them)."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

SHIPPED_CONFIGS = Path(__file__).parent.parent / "configs"


@dataclass
class ModelConfig:
    preset: str = "gpt2-small"
    """Model shape from pretrain/presets.py: gpt2-small/medium/large/xl, bert-base/large, tiny-gpt2, tiny-bert,
    llama-tiny/125m/350m/1b, modernbert-tiny/base/large. The family (GPT-2, BERT, Llama, ModernBERT) decides the
    objective: causal LM or masked LM."""
    rope_theta: float | None = None
    """Rotary families (Llama; ModernBERT's global layers, its local ones keep 10000): the base of the rotary
    frequencies (default: the preset's: Llama 10000, ModernBERT 160000)."""
    tie_embeddings: bool | None = None
    """Llama: the output projection shares the token embedding (default: the preset's; GPT-2 and BERT always tie)."""
    init_from: str | None = None
    """Continue pretraining from this Hugging Face model folder (or hub name) instead of a fresh init.
    Its embedding is resized when the tokenizer has more tokens."""
    dropout: float = 0.0
    """Dropout on embeddings, attention and residuals (0 is the usual choice for pretraining)."""
    activation_checkpointing: Literal["auto", "none", "selective", "full"] | bool = "auto"
    """Recompute activations in backward: "none", "selective" (only model.checkpoint_layers blocks, or as few
    as fit), "full" (every block: least memory, a third more compute), or "auto": the parallel plan picks the
    least recompute that fits (true/false mean full/none)."""
    checkpoint_layers: int | None = None
    """With selective checkpointing: how many transformer blocks recompute (default: as few as fit)."""
    vocab_multiple: int = 64
    """Round the embedding up to a multiple of this many rows (tensor-core friendly); 1 keeps it exact."""
    attention: str = "sdpa"
    """Attention kernel: "sdpa" (PyTorch scaled_dot_product_attention: flash / memory-efficient) or "eager"."""
    lm_head: Literal["auto", "liger", "chunked", "plain"] = "auto"
    """LM head + cross-entropy: "chunked" (fused, in row chunks, never the whole [tokens x vocab] logits;
    compiled on GPUs), "liger" (Liger-Kernel's fused linear cross-entropy, when installed on a GPU; it
    waits for the GPU twice per micro batch), "plain" (logits then cross-entropy: the reference), "auto":
    chunked."""
    compile: Literal["auto"] | bool = "auto"
    """torch.compile each transformer block (regional: one compilation shared by all blocks, ZeRO hooks
    outside the graph), falling back to eager with a warning; "auto": on GPUs only; true: on CPUs too."""
    compile_backend: str = "inductor"
    """torch.compile's backend for the blocks: "inductor" (generated Triton kernels on GPUs, C++ on CPUs), or
    another registered one ("aot_eager" traces and partitions the graphs but runs them with eager kernels:
    for debugging, and for CI's quick rehearsals of the compiled path)."""
    block: Literal["hf", "own"] = "hf"
    """GPT-2 block implementation: transformers' GPT2Block, or this project's compact block with the same
    parameter names and layout (exports as the same GPT2LMHeadModel checkpoint)."""
    zero3_whole_blocks: bool = True
    """ZeRO-3: gather each transformer block's parameters at once on entering it, instead of through a
    hook on every linear and norm layer inside it; the same arithmetic with far fewer host-side hooks."""

    def __post_init__(self) -> None:
        if isinstance(self.activation_checkpointing, bool):  # the YAML of earlier versions
            self.activation_checkpointing = "full" if self.activation_checkpointing else "none"


@dataclass
class DataConfig:
    tokenizer: str = ""
    """Tokenizer folder used for preprocessing (vocabulary size and special token ids come from it)."""
    prefixes: list[Any] = field(default_factory=list)
    """Dataset prefixes (PREFIX.bin/.idx). Blend with weights: ["0.7 ko_text_document", "0.3 news_text_document"]
    or [{prefix: ..., weight: ...}]. MLM needs _sentence datasets (preprocess with --split-sentences)."""
    seq_len: int = 1024
    """Tokens per sample (CLM reads seq_len + 1 to shift targets; MLM: the maximum, [CLS]/[SEP] included)."""
    split: str = "969,30,1"
    """Train/valid/test proportions, split by documents (Megatron's --split)."""
    mask_prob: float | None = None
    """MLM: share of tokens to predict; of those 80% become [MASK], 10% a random token, 10% stay. Default
    (unset): the model family's: 0.15 for BERT, 0.3 for ModernBERT."""
    whole_word_masking: bool = True
    """MLM: mask whole words (a Korean eojeol is one word) instead of single tokens."""
    whole_word_unit: Literal["eojeol", "morpheme"] = "eojeol"
    """MLM whole-word masking's unit: "eojeol" (whitespace-delimited word) or "morpheme" (each morpheme of a
    Korean eojeol on its own; needs a tokenizer trained with --morphemes ko)."""
    sentence_order_prediction: bool = False
    """MLM: add ALBERT's sentence-order prediction (segments swapped half the time)."""
    short_seq_prob: float = 0.1
    """MLM: share of samples built to a random shorter length, as BERT does."""
    document_mask: bool | None = None
    """Packed documents never attend to each other and positions restart at each one. CLM: attention stops at
    every end-of-document token. MLM (ModernBERT): whole documents ``[CLS] text [SEP]`` packed without padding
    instead of padded sentence pairs. Default (unset): the model family's: on for Llama and ModernBERT, off for
    GPT-2 (and BERT, which trains on sentence pairs)."""
    num_workers: int = 2
    """DataLoader worker processes per rank."""
    cache_dir: str | None = None
    """Where sample indices are cached; default: a folder next to each dataset."""
    index_wait_minutes: float = 120.0
    """How long a rank waits for another rank (or node) to build a sample index before giving up."""


@dataclass
class OptimConfig:
    optimizer: str = "adamw"
    """"adamw" (torch's fused AdamW on GPUs, CPU Adam when offloaded), "lamb" (large-batch BERT) or
    "stable_adamw" (AdamW with per-tensor update clipping, as ModernBERT trains; set grad_clip=0 to rely on it
    alone). lamb and stable_adamw need whole tensors: ZeRO stage 0 (auto picks it; ZeRO's flat partitions
    would break LAMB's per-layer trust ratio and StableAdamW's per-tensor clipping)."""
    lr: float = 6e-4
    """Peak learning rate."""
    min_lr: float = 6e-5
    """Learning rate at the end of the decay (the floor)."""
    warmup_steps: int = 2000
    """Linear warmup from 0 to lr over these optimizer steps."""
    decay: str = "cosine"
    """Decay after warmup to min_lr: "cosine", "linear", "constant", or "wsd" (warmup-stable-decay: the peak
    lr until the last optim.decay_fraction of train.steps, then optim.wsd_shape down to min_lr)."""
    decay_fraction: float = 0.2
    """With decay=wsd: the share of train.steps spent decaying, at the end (0.2: the last 20%)."""
    wsd_shape: Literal["1-sqrt", "linear"] = "1-sqrt"
    """With decay=wsd: the decay's shape, "1-sqrt" (the multiplier falls as 1 - sqrt(progress): the better
    of the two cooldowns Hägele et al. 2024 compare) or "linear"."""
    weight_decay: float = 0.1
    """AdamW weight decay; never applied to biases, norms or embeddings' position rows."""
    beta1: float = 0.9
    beta2: float = 0.95
    eps: float = 1e-8
    grad_clip: float = 1.0
    """Clip the global gradient norm to this (0 disables)."""
    fused: bool = True
    """adamw on GPUs: one fused kernel (torch's AdamW(fused=True); DeepSpeed's FusedAdam where DeepSpeed was
    installed with it built); false: torch's unfused AdamW (the baseline). lamb uses FusedLamb on GPUs either way."""

    @property
    def whole_tensors(self) -> bool:
        """The optimizer works on each parameter whole (per tensor): ZeRO stage 0 only."""
        return self.optimizer in ("lamb", "stable_adamw")

    def wsd_decay_steps(self, steps: int) -> int:
        """decay=wsd: how many of ``steps`` decay (the last ``decay_fraction`` of them, at least one)."""
        return max(1, round(self.decay_fraction * steps))


@dataclass
class TrainConfig:
    steps: int = 10000
    """Optimizer steps to train for."""
    global_batch: int = 512
    """Samples per optimizer step: micro_batch x gradient accumulation x data-parallel size."""
    micro_batch: Literal["auto"] | int = "auto"
    """Samples per rank per forward/backward; "auto": the parallel plan picks the fastest that fits."""
    rampup_batch_size: list[int] | None = None
    """[start, increment, samples] (Megatron-LM's --rampup-batch-size): the global batch starts at ``start`` and
    grows by ``increment`` in equal shares of the first ``samples`` samples, up to global_batch; the micro batch
    stays and gradient accumulation grows. Set by the samples consumed, so a resumed run follows the same ramp."""
    precision: str = "bf16"
    """"bf16" (mixed precision), "fp16" (dynamic loss scaling) or "fp32"."""
    ds_config: str = "auto"
    """DeepSpeed JSON: "auto" (the parallel plan picks the ZeRO stage: the fastest that fits), a shipped name
    (zero0, zero1, zero2, zero3, zero3_offload) or a path. It must not set batch, lr or precision."""
    device_memory_gib: float | None = None
    """Memory per device the plan may use; default: the GPU's total memory (on CPU: RAM / local ranks)."""
    memory_margin: float = 0.1
    """Share of device memory the plan leaves free (allocator fragmentation, CUDA context, workspaces)."""
    eval_interval: int = 500
    """Evaluate on the valid split every this many steps (and at the end)."""
    eval_samples: int = 256
    """Valid samples per evaluation (a fixed set, so evaluations compare)."""
    log_interval: int = 10
    """Log metrics every this many steps."""
    save_interval: int = 1000
    """Save a checkpoint every this many steps (and at the end)."""
    keep_last: int = 3
    """Keep this many most recent complete checkpoints."""
    exit_interval: int | None = None
    """Save and exit after this many steps of this launch (Megatron's --exit-interval); a relaunch resumes."""
    exit_minutes: float | None = None
    """Save and exit once this launch has run this long (fit a Slurm time limit); a relaunch resumes."""
    max_nonfinite_steps: int = 5
    """Stop after this many consecutive steps whose loss or gradient was not finite (inf/nan)."""
    peak_tflops: float | None = None
    """Peak TFLOP/s per device for MFU; default: looked up from the GPU name, measured matmul rate on CPU."""
    stop_check_interval: int = 10
    """Every this many steps the ranks agree on stopping (signal, run.dir/STOP, train.exit_minutes): the
    one collective that reaches the host, kept out of the other steps."""
    distributed_timeout_minutes: float = 15
    """How long a collective waits for a rank that does not answer before the run stops with an error
    (Megatron's --distributed-timeout-minutes): the bound on a hang when a node dies silently."""

    def global_batch_at(self, consumed_samples: int) -> int:
        """The global batch of the step that starts after ``consumed_samples``: ``global_batch``, or on a
        batch ramp-up its size there (as Megatron-LM: start + increment x whole shares of the ramp passed)."""
        if not self.rampup_batch_size:
            return self.global_batch
        start, increment, samples = self.rampup_batch_size
        increments = (self.global_batch - start) // increment
        if consumed_samples >= samples or increments <= 0:
            return self.global_batch
        return min(self.global_batch, start + increment * (consumed_samples * increments // samples))

    def batch_multiple(self, consumed_samples: int = 0) -> int:
        """What every global batch from ``consumed_samples`` on is a multiple of (the ramp's sizes still ahead,
        none once it is over): micro batch x data-parallel size must divide it."""
        batch = self.global_batch_at(consumed_samples)
        if batch == self.global_batch:
            return batch
        return math.gcd(self.global_batch, batch, self.rampup_batch_size[1])

    def samples_for(self, steps: int) -> int:
        """Samples consumed by ``steps`` optimizer steps from the start (fewer than steps x global_batch on a
        ramp)."""
        consumed = 0
        for step in range(steps):
            batch = self.global_batch_at(consumed)
            if batch == self.global_batch:
                return consumed + (steps - step) * batch
            consumed += batch
        return consumed


@dataclass
class RunConfig:
    dir: str = "runs/default"
    """Run folder: config.yaml, metrics.jsonl, tensorboard/, checkpoints/. Restarting with the same dir resumes."""
    seed: int = 1234
    """Seeds initialization, data order and masking."""
    tensorboard: bool = True
    """Write TensorBoard event files under run.dir/tensorboard."""
    plots: bool = True
    """Draw run.dir/plots/loss.png and overview.png after evaluations and at the end."""
    plot_interval_minutes: float = 5.0
    """Redraw the plots after an evaluation only when this many minutes have passed since the last drawing (or
    since the trainer was set up): a drawing takes rank 0 about a second, and every rank waits for it. The end
    (and a run stopped by a diverged loss) is always drawn. 0 redraws after every evaluation, inf only at the end."""
    wandb: str | None = None
    """A Weights & Biases project to mirror metrics to (pip install wandb; WANDB_MODE=offline needs no network)."""
    resume_from: str | None = None
    """Resume from this checkpoint tag (e.g. step00002000) instead of the latest; newer ones are set aside. Taken
    once: a relaunch with it (the same command, or the run summary's resume line) goes on from the checkpoints the
    branch saved since."""


@dataclass
class Config:
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    run: RunConfig = field(default_factory=RunConfig)

    def __post_init__(self) -> None:
        if self.data.document_mask is None:  # the family's default, written out in the run's config.yaml
            from pretrain.presets import document_mask_default

            self.data.document_mask = document_mask_default(self.model.preset)
        if self.data.mask_prob is None:  # likewise
            from pretrain.presets import mask_prob_default

            self.data.mask_prob = mask_prob_default(self.model.preset)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False, allow_unicode=True)


class ConfigError(ValueError):
    """Every problem found in a configuration, one per line."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("invalid configuration:\n  - " + "\n  - ".join(problems))


