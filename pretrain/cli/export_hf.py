"""Export a training checkpoint (ZeRO shards gathered) as a Hugging Face model folder."""

from __future__ import annotations

import argparse

from pretrain.cli.runner import UserError, run


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("source", help="a run dir (its latest complete checkpoint), its checkpoints/ dir, or one "
                                  "checkpoints/stepNNNNNNNN dir")
    p.add_argument("output", help="the Hugging Face folder to write (safetensors, config, tokenizer)")
    p.add_argument("--overwrite", action="store_true")
    return p


def main(argv: list[str] | None = None) -> int:
    from pretrain.export import ExportError, export_checkpoint

    args = parser().parse_args(argv)
    try:
        out = export_checkpoint(args.source, args.output, overwrite=args.overwrite)
    except ExportError as exc:
        raise UserError(str(exc)) from None
    from transformers import AutoConfig

    from pretrain.evaluation.models import objective_of

    config = AutoConfig.from_pretrained(out)
    auto = "AutoModelForMaskedLM" if objective_of(config) == "mlm" else "AutoModelForCausalLM"
    print(f"exported to {out} ({config.architectures[0]}): load it with transformers' {auto} and AutoTokenizer")
    return 0


def cli() -> None:
    run(main)


if __name__ == "__main__":
    cli()
