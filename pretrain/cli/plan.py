"""Plan per-GPU memory for a run before launching it: weights, gradients, optimizer states,
activations (with and without checkpointing), and the largest micro batch that fits."""

from __future__ import annotations

import argparse
from dataclasses import replace

from pretrain.cli.runner import run


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--config", help="read preset, seq_len, micro batch, precision, ZeRO stage and offload from a config")
    p.add_argument("--preset", help="model preset (default: the config's, else gpt2-small)")
    p.add_argument("--vocab-size", type=int, help="default: the tokenizer's (--tokenizer) or the published one")
    p.add_argument("--tokenizer", help="take the vocabulary size from this tokenizer folder")
    p.add_argument("--zero", type=int, choices=[0, 1, 2, 3], help="ZeRO stage")
    p.add_argument("--offload", choices=["none", "optimizer", "all"], help="ZeRO offload to CPU")
    p.add_argument("--precision", choices=["bf16", "fp16", "fp32"])
    p.add_argument("--micro-batch", type=int)
    p.add_argument("--seq-len", type=int)
    p.add_argument("--checkpointing", action="store_true", default=None, help="activation checkpointing")
    p.add_argument("--gpus-per-node", type=int, default=8)
    p.add_argument("--nodes", type=int, default=1)
    p.add_argument("--gpu-memory", type=float, default=80.0, help="GiB per GPU, for the largest micro batch")
    return p


def from_config(path: str):
    from pretrain.config import load_config
    from pretrain.ds_json import read_ds_config
    from pretrain.planner import PlanInput

    config = load_config(path)
    ds = read_ds_config(config.train.ds_config).get("zero_optimization", {})
    offload = "all" if "offload_param" in ds else "optimizer" if "offload_optimizer" in ds else "none"
    return PlanInput(config.model.preset, seq_len=config.data.seq_len, micro_batch=config.train.micro_batch,
                     zero_stage=ds.get("stage", 0), offload=offload, precision=config.train.precision,
                     activation_checkpointing=config.model.activation_checkpointing, attention=config.model.attention,
                     fused_loss=config.model.fused_loss)


def main(argv: list[str] | None = None) -> int:
    from pretrain.planner import GIB, PlanInput, largest_micro_batch, plan

    args = parser().parse_args(argv)
    spec = from_config(args.config) if args.config else PlanInput(args.preset or "gpt2-small")
    vocab = args.vocab_size
    if args.tokenizer:
        from pretrain.tokenization import load_tokenizer

        vocab = load_tokenizer(args.tokenizer).vocab_size
    changes = {"preset": args.preset, "vocab_size": vocab, "zero_stage": args.zero, "offload": args.offload,
               "precision": args.precision, "micro_batch": args.micro_batch, "seq_len": args.seq_len,
               "activation_checkpointing": args.checkpointing, "gpus_per_node": args.gpus_per_node,
               "nodes": args.nodes, "gpu_memory_gib": args.gpu_memory}
    spec = replace(spec, **{k: v for k, v in changes.items() if v is not None})
    with_ckpt, without = replace(spec, activation_checkpointing=True), replace(spec, activation_checkpointing=False)
    planned = plan(spec)
    print(f"{spec.preset}: {planned.parameters / 1e6:,.1f}M parameters (largest layer {planned.largest_layer / 1e6:,.1f}M), "
          f"ZeRO-{spec.zero_stage}, offload {spec.offload}, {spec.precision}, {spec.gpus_per_node} GPU(s) x "
          f"{spec.nodes} node(s), micro batch {spec.micro_batch} x seq {spec.seq_len}")
    print(f"{'per GPU':<34} {'GiB':>8}")
    for name, value in planned.per_gpu.items():
        if name != "activations":
            print(f"  {name:<32} {value / GIB:>8.2f}")
    states = planned.total - planned.per_gpu["activations"]
    for label, variant in (("activations, no checkpointing", without), ("activations, checkpointing", with_ckpt)):
        activations = plan(variant).per_gpu["activations"]
        marker = " <-" if variant.activation_checkpointing == spec.activation_checkpointing else ""
        print(f"  {label:<32} {activations / GIB:>8.2f}   total {(states + activations) / GIB:.2f}{marker}")
    if planned.cpu_per_node:
        print(f"CPU memory per node for offloaded states: {planned.cpu_per_node / GIB:.1f} GiB")
    for label, variant in (("without", without), ("with", with_ckpt)):
        best = largest_micro_batch(variant)
        print(f"largest micro batch in {spec.gpu_memory_gib:g} GiB {label} checkpointing: {best}")
    return 0


def cli() -> None:
    run(main)


if __name__ == "__main__":
    cli()
