"""Plan a run before launching it: the parallel plan the trainer would choose (ZeRO stage, micro batch,
gradient accumulation, recompute), why faster plans were rejected, and the per-GPU memory of the
chosen plan by component. Options fix parts of the plan, as the config keys do; any other key is given
as the trainer takes it (``KEY=VALUE``, e.g. ``train.rampup_batch_size=null``), after the options."""

from __future__ import annotations

import argparse
from dataclasses import replace

from pretrain.cli.runner import UserError, run


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--config", default="gpt2_small", help="a shipped config name or a YAML file")
    p.add_argument("--preset", help="model preset (default: the config's)")
    p.add_argument("--vocab-size", type=int, help="default: the tokenizer's (--tokenizer) or the published one")
    p.add_argument("--tokenizer", help="take the vocabulary size from this tokenizer folder")
    p.add_argument("--zero", type=int, choices=[0, 1, 2, 3], help="fix the ZeRO stage (default: the config's, else auto)")
    p.add_argument("--micro-batch", type=int, help="fix the micro batch (default: the config's, else auto)")
    p.add_argument("--global-batch", type=int, help="default: the config's")
    p.add_argument("--seq-len", type=int, help="default: the config's")
    p.add_argument("--precision", choices=["bf16", "fp16", "fp32"])
    p.add_argument("--recompute", choices=["auto", "none", "selective", "full"], help="default: the config's")
    p.add_argument("--gpus-per-node", type=positive(int), default=8)
    p.add_argument("--nodes", type=positive(int), default=1)
    p.add_argument("--gpu-memory", type=positive(float), default=80.0, help="GiB per GPU")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE",
                   help="config overrides as the trainer takes them, applied after the options")
    return p


def positive(kind: type):
    """An argparse type: a number of ``kind`` above 0."""
    def parse(text: str):
        value = kind(text)
        if value <= 0:
            raise argparse.ArgumentTypeError(f"{text} is not above 0")
        return value
    return parse


def main(argv: list[str] | None = None) -> int:
    from pretrain.config import load_config, validate
    from pretrain.parallel import PlanError, choose_plan, request_from_config
    from pretrain.planner import GIB, PlanInput, plan
    from pretrain.presets import get_preset

    args = parser().parse_args(argv)
    overrides = [f"{key}={value}" for key, value in (
        ("model.preset", args.preset), ("train.micro_batch", args.micro_batch), ("train.global_batch", args.global_batch),
        ("data.seq_len", args.seq_len), ("train.precision", args.precision),
        ("model.activation_checkpointing", args.recompute),
        ("train.ds_config", None if args.zero is None else f"zero{args.zero}")) if value is not None]
    config = load_config(args.config, overrides + args.overrides)
    validate(config, args.gpus_per_node * args.nodes, with_data=False)  # every problem at once, exit 2
    vocab = args.vocab_size
    if args.tokenizer:
        from pretrain.run_tokenizer import load_run_tokenizer

        vocab = load_run_tokenizer(config, args.tokenizer).vocab_size  # the trainer's vocabulary
    world = args.gpus_per_node * args.nodes
    try:
        request = request_from_config(config, vocab or 0, world, args.gpus_per_node, args.gpu_memory * GIB)
        preset = get_preset(request.preset)  # the preset's shape, or a model.init_from folder's own
        if not vocab:  # neither given: the published one (a folder's own rows)
            request = replace(request, vocab_size=preset.published_vocab)
        chosen = choose_plan(request)
    except PlanError as exc:
        raise UserError(str(exc)) from None
    vocab = request.vocab_size
    print(f"{preset.name}: {config.data.seq_len} tokens per sample, global batch {config.train.global_batch}, "
          f"{config.train.precision}, {args.gpus_per_node} GPU(s) x {args.nodes} node(s) of {args.gpu_memory:g} GiB")
    print(f"plan: {chosen.summary()}")
    if config.train.rampup_batch_size:
        start, _, samples = config.train.rampup_batch_size
        print(f"  batch ramp-up: from {start} samples per step (accumulation "
              f"{start // (chosen.micro_batch * world)}) to {config.train.global_batch} over {samples:,} samples")
    for reason in chosen.rejected:
        print(f"  a faster plan does not fit: {reason}")
    spec = PlanInput(preset, vocab_size=vocab, seq_len=config.data.seq_len, micro_batch=chosen.micro_batch,
                     zero_stage=chosen.zero_stage, offload=chosen.offload, precision=config.train.precision,
                     recompute_layers=chosen.recompute_layers, attention=config.model.attention,
                     fused_loss=config.model.lm_head != "plain", predicted_per_sample=request.predicted_per_sample,
                     gpus_per_node=args.gpus_per_node, nodes=args.nodes, gpu_memory_gib=args.gpu_memory,
                     document_mask=request.document_mask, tie_embeddings=request.tie_embeddings)
    planned = plan(spec)
    print(f"{planned.parameters / 1e6:,.1f}M parameters (largest unit gathered by ZeRO-3: "
          f"{planned.largest_layer / 1e6:,.1f}M); per GPU:")
    for name, value in planned.per_gpu.items():
        print(f"  {name:<32} {value / GIB:>8.2f} GiB")
    print(f"  {'total':<32} {planned.total / GIB:>8.2f} GiB")
    if planned.cpu_per_node:
        print(f"CPU memory per node for offloaded states: {planned.cpu_per_node / GIB:.1f} GiB")
    full = plan(replace(spec, recompute_layers=preset.layers))
    print(f"with full recompute the same micro batch would need {full.total / GIB:.2f} GiB")
    return 0


def cli() -> None:
    run(main)


if __name__ == "__main__":
    cli()
