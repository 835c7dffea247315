"""The parallel plan: ZeRO stage, micro batch, gradient accumulation and activation recompute.

``choose_plan`` walks every combination the run allows (what the config fixes stays fixed), asks the
memory planner what each needs per device, keeps those that fit in the device's memory less a safety
margin, and takes the fastest by a simple cost model:

    time per sample  ~  (1 + recomputed share / 3)  /  (micro-batch efficiency x stage efficiency)

Recomputing a block repeats its forward (a third of its forward + backward). A micro batch of t
tokens keeps the GPU's matrix units t / (t + 512) busy (small GEMMs and per-launch overheads). ZeRO-3
gathers parameters before every block on every micro batch (0.8 on one device, 0.85 with several,
whose all-gathers overlap); ZeRO-1/2 add a bucketed reduce-scatter and all-gather (0.97, 0.95); no
ZeRO is this project's fastest path (fp32 weights under bf16 autocast, fused AdamW, no host syncs).
So a model that fits runs without ZeRO-3, a big one recomputes only as many blocks as it must, and
ZeRO-3 is used where nothing else fits.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, replace

from pretrain.config import Config
from pretrain.data.masking import max_predictions
from pretrain.ds_json import offload_of, read_ds_config, zero_stage
from pretrain.planner import GIB, PlanInput, parameter_sizes, plan
from pretrain.presets import Preset, get_preset

TOKENS_HALF_EFFICIENT = 512
STAGE_EFFICIENCY = {(0, True): 1.0, (1, True): 0.97, (2, True): 0.95, (3, True): 0.8,  # one device
                    (0, False): 1.0, (1, False): 0.97, (2, False): 0.95, (3, False): 0.85}
OFFLOAD_EFFICIENCY = 0.5


class PlanError(ValueError):
    """No plan fits; the message says what the smallest one needs and what to change."""


class UnreadableFolder(PlanError):
    """model.init_from's config.json cannot be read here: a hub or a file system that one rank may meet and
    another not, so each rank that meets it says so."""


@dataclass(frozen=True)
class PlanRequest:
    """What a run asks of the plan. None / "auto" fields are the plan's to choose."""

    preset: str | Preset  # a name, or a shape (a model.init_from folder's)
    vocab_size: int
    seq_len: int
    global_batch: int
    world_size: int
    ranks_per_node: int
    device_memory: float  # bytes per device
    margin: float = 0.1
    precision: str = "bf16"
    attention: str = "sdpa"
    fused_loss: bool = True
    predicted_per_sample: int | None = None
    zero_stage: int | None = None
    offload: str = "none"
    micro_batch: int | None = None
    recompute: str = "auto"  # auto | none | selective | full
    recompute_layers: int | None = None  # selective with a fixed count
    whole_stage_only: tuple[int, ...] | None = None  # stages the optimizer allows (LAMB, StableAdamW: 0)
    document_mask: bool = False  # packed documents masked (data.document_mask)
    tie_embeddings: bool | None = None  # model.tie_embeddings (default: the preset's)
    batch_multiple: int | None = None  # what every global batch is a multiple of (a batch ramp-up's sizes too)

    @property
    def batches_split_by(self) -> int:
        """What micro batch x world size must divide: every global batch ahead (default: the one)."""
        return self.batch_multiple or self.global_batch


@dataclass(frozen=True)
class ParallelPlan:
    zero_stage: int
    offload: str
    micro_batch: int
    accumulation: int
    recompute_layers: int
    layers: int
    planned_bytes: float
    budget_bytes: float
    relative_time: float
    rejected: tuple[str, ...] = ()

    @property
    def recompute(self) -> str:
        if self.recompute_layers == 0:
            return "none"
        if self.recompute_layers >= self.layers:
            return "full"
        return f"selective ({self.recompute_layers} of {self.layers} blocks)"

    @property
    def fits(self) -> bool:
        return self.planned_bytes <= self.budget_bytes

    def summary(self) -> str:
        offload = f" + offload {self.offload}" if self.offload != "none" else ""
        return (f"ZeRO-{self.zero_stage}{offload}, micro batch {self.micro_batch} x accumulation {self.accumulation}, "
                f"recompute {self.recompute}: {self.planned_bytes / GIB:.1f} GiB planned of {self.budget_bytes / GIB:.1f} "
                "GiB usable")


def relative_time(stage: int, offload: str, micro_batch: int, seq_len: int, recompute_layers: int, layers: int,
                  one_device: bool) -> float:
    """The cost model's time per sample (lower is faster; only ratios mean anything)."""
    tokens = micro_batch * seq_len
    efficiency = tokens / (tokens + TOKENS_HALF_EFFICIENT) * STAGE_EFFICIENCY[stage, one_device]
    if offload != "none":
        efficiency *= OFFLOAD_EFFICIENCY
    return (1 + recompute_layers / layers / 3) / efficiency


def choose_plan(request: PlanRequest) -> ParallelPlan:
    """The fastest plan that fits (what the request fixes is kept); PlanError if none fits."""
    preset = get_preset(request.preset)
    layers, one_device = preset.layers, request.world_size == 1
    sizes = parameter_sizes(request.preset, request.vocab_size, request.tie_embeddings)
    budget = request.device_memory * (1 - request.margin)
    per_rank = request.global_batch // request.world_size
    _check_batches_split(request)
    base = PlanInput(request.preset, vocab_size=request.vocab_size, seq_len=request.seq_len, offload=request.offload,
                     precision=request.precision, attention=request.attention, fused_loss=request.fused_loss,
                     predicted_per_sample=request.predicted_per_sample, gpus_per_node=request.ranks_per_node,
                     nodes=max(1, request.world_size // max(request.ranks_per_node, 1)),
                     gpu_memory_gib=request.device_memory / GIB, document_mask=request.document_mask,
                     tie_embeddings=request.tie_embeddings)
    candidates = []
    for stage in _stages(request, one_device):
        for micro in _micro_batches(request, per_rank):
            for recomputed in _recompute_options(request, layers):
                spec = replace(base, zero_stage=stage, micro_batch=micro, recompute_layers=recomputed)
                needed = plan(spec, sizes).total
                time = relative_time(stage, request.offload, micro, request.seq_len, recomputed, layers, one_device)
                candidates.append(ParallelPlan(stage, request.offload, micro, per_rank // micro, recomputed, layers,
                                               needed, budget, time))
                if needed <= budget:
                    break  # more recompute only costs time
    fitting = [c for c in candidates if c.fits]
    if not fitting:
        smallest = min(candidates, key=lambda c: c.planned_bytes)
        if _fully_fixed(request):
            return smallest  # the config asked for exactly this: run it, the trainer warns
        raise PlanError(
            f"no parallel plan fits {request.device_memory / GIB:.1f} GiB per device (less the "
            f"{request.margin:.0%} margin): the smallest, {smallest.summary()}. Use more devices (ZeRO-3 partitions "
            "the model states across them), train.ds_config=zero3_offload, a shorter data.seq_len, or a smaller "
            "model.preset; set train.device_memory_gib if the device has more memory than detected.")
    best = min(fitting, key=lambda c: (round(c.relative_time, 9), c.planned_bytes))
    return replace(best, rejected=_nearest_misses(candidates, best))


def _nearest_misses(candidates: list[ParallelPlan], best: ParallelPlan) -> tuple[str, ...]:
    """Why faster plans lost: per ZeRO stage and recompute, the faster plan that came closest to fitting."""
    nearest: dict[tuple[int, bool], ParallelPlan] = {}
    for candidate in candidates:
        if candidate.fits or candidate.relative_time >= best.relative_time:
            continue
        kind = (candidate.zero_stage, candidate.recompute_layers == 0)
        if kind not in nearest or candidate.planned_bytes < nearest[kind].planned_bytes:
            nearest[kind] = candidate
    return tuple(f"ZeRO-{c.zero_stage}, micro batch {c.micro_batch}, recompute {c.recompute}: needs "
                 f"{c.planned_bytes / GIB:.1f} GiB" for c in sorted(nearest.values(), key=lambda c: c.relative_time))


def _stages(request: PlanRequest, one_device: bool) -> list[int]:
    if request.zero_stage is not None:
        return [request.zero_stage]
    stages = [0, 3] if one_device else [0, 1, 2, 3]  # on one device ZeRO-1/2 partition nothing
    if request.whole_stage_only is not None:
        stages = [s for s in stages if s in request.whole_stage_only]
    return stages


def _check_batches_split(request: PlanRequest) -> None:
    """Every global batch ahead (a batch ramp-up's too) must split into whole micro batches on every rank."""
    multiple = request.batches_split_by
    split = request.world_size * (request.micro_batch or 1)
    if multiple % split:
        what = (f"micro batch x data-parallel size = {request.micro_batch} x {request.world_size}"
                if request.micro_batch else f"the data-parallel size {request.world_size}")
        raise PlanError(f"the global batches ahead (train.rampup_batch_size's, up to train.global_batch="
                        f"{request.global_batch}) are multiples of {multiple} only, not of {what}: choose a ramp "
                        f"whose start and increment are, or another train.micro_batch or number of ranks")


def _micro_batches(request: PlanRequest, per_rank: int) -> list[int]:
    """The micro batches to try, largest first: those that split every global batch of the run (on a batch
    ramp-up, its smaller ones too) into whole micro batches on each rank."""
    if request.micro_batch is not None:
        return [request.micro_batch]
    smallest = request.batches_split_by // request.world_size
    return [m for m in range(per_rank, 0, -1) if per_rank % m == 0 and smallest % m == 0]


def _recompute_options(request: PlanRequest, layers: int) -> list[int]:
    if request.recompute == "none":
        return [0]
    if request.recompute == "full":
        return [layers]
    if request.recompute == "selective":
        return [request.recompute_layers] if request.recompute_layers else list(range(1, layers))
    return list(range(0, layers + 1))


def _fully_fixed(request: PlanRequest) -> bool:
    return (request.zero_stage is not None and request.micro_batch is not None
            and (request.recompute in ("none", "full") or bool(request.recompute_layers)))


def device_memory_bytes(configured_gib: float | None, device, ranks_per_node: int) -> float:
    """Memory one rank may plan with: train.device_memory_gib, else the GPU's, else this host's RAM
    shared by its ranks."""
    if configured_gib:
        return configured_gib * GIB
    if device.type == "cuda":
        import torch

        return float(torch.cuda.get_device_properties(device).total_memory)
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / max(ranks_per_node, 1)


def request_from_config(config: Config, vocab_size: int, world_size: int, ranks_per_node: int, device_memory: float,
                        resumed_stage: int | None = None, consumed_samples: int = 0) -> PlanRequest:
    """What the config fixes and what it leaves to the plan. A resumed run keeps its checkpoint's ZeRO stage,
    and its batches are those from its ``consumed_samples`` on (a batch ramp-up may be over)."""
    model, data, train = config.model, config.data, config.train
    stage, offload = None, "none"
    if train.ds_config != "auto":
        stage, offload = zero_stage(train.ds_config), offload_of(read_ds_config(train.ds_config))
    if resumed_stage is not None:
        if stage is not None and stage != resumed_stage:
            raise PlanError(f"the checkpoint in {config.run.dir} was saved with ZeRO stage {resumed_stage}, but "
                            f"train.ds_config={train.ds_config} asks for stage {stage}: resume with "
                            f"train.ds_config=auto (or a stage-{resumed_stage} file), or start a new run.dir")
        stage = resumed_stage
    recompute = model.activation_checkpointing
    if recompute == "auto" and model.checkpoint_layers:
        recompute = "selective"
    from pretrain.model.build import model_shape

    try:
        shape = model_shape(model)  # a model.init_from folder's own
    except ValueError as exc:  # a folder of another family
        raise PlanError(str(exc)) from None
    except OSError as exc:
        raise UnreadableFolder(f"model.init_from={model.init_from}: its config.json cannot be read ({exc}); give a "
                               "folder holding a transformers model, or a hub name with the hub reachable") from None
    mlm = shape.objective == "mlm"
    if model.init_from:  # its rows, grown (and padded) to the tokenizer where fewer: what build_model makes
        from pretrain.model.hf import continued_rows

        vocab_size = continued_rows(shape.published_vocab, vocab_size, model.vocab_multiple)
        if data.seq_len > shape.max_positions:  # what validation checks for a preset
            raise PlanError(f"data.seq_len={data.seq_len} exceeds the {shape.max_positions} positions of "
                            f"model.init_from={model.init_from}")
        if model.checkpoint_layers is not None and not 0 < model.checkpoint_layers <= shape.layers:
            raise PlanError(f"model.checkpoint_layers={model.checkpoint_layers} must be between 1 and the "
                            f"{shape.layers} layers of model.init_from={model.init_from}")
    return PlanRequest(
        preset=shape, vocab_size=vocab_size, seq_len=data.seq_len, global_batch=train.global_batch,
        world_size=world_size, ranks_per_node=ranks_per_node, device_memory=device_memory, margin=train.memory_margin,
        precision=train.precision, attention=model.attention, fused_loss=model.lm_head != "plain",
        predicted_per_sample=(max_predictions(data.seq_len, data.mask_prob, packed=bool(data.document_mask)) if mlm
                              else None), zero_stage=stage,
        offload=offload, micro_batch=None if train.micro_batch == "auto" else train.micro_batch, recompute=recompute,
        recompute_layers=model.checkpoint_layers, whole_stage_only=(0,) if config.optim.whole_tensors else None,
        document_mask=bool(data.document_mask), tie_embeddings=None if model.init_from else model.tie_embeddings,
        batch_multiple=train.batch_multiple(consumed_samples))
