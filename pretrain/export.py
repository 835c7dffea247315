"""Export a DeepSpeed (ZeRO) checkpoint as a Hugging Face model folder.

The partitioned fp32 master weights of every rank are gathered offline (no GPU, no process group)
into one state dict, loaded into the transformers class the run trained (GPT2LMHeadModel,
BertForMaskedLM / BertForPreTraining, LlamaForCausalLM: the family's), and saved as safetensors with the
run's tokenizer (special tokens included) and, for decoders, a generation config.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from pathlib import Path

from pretrain import manifest
from pretrain.checkpoint import COMPLETE, INSPECT_HINT, latest_complete

log = logging.getLogger(__name__)
EXPORT_RECORD = "pretrain_export.json"  # which checkpoint, how its run trained, its data's end-of-document token


class ExportError(ValueError):
    pass


def resolve_checkpoint(path: str | os.PathLike) -> tuple[Path, Path, str]:
    """(run dir, checkpoints dir, tag) from a run dir, its checkpoints/ dir or one checkpoint's dir."""
    path = Path(path)
    if (path / COMPLETE).exists():
        check(path)
        return path.parent.parent, path.parent, path.name
    checkpoints = path / "checkpoints" if (path / "checkpoints").is_dir() else path
    tag = latest_complete(checkpoints) if checkpoints.is_dir() else None
    if tag is None:
        if path.is_dir() and path.name.startswith("step"):
            raise ExportError(f"{path} is incomplete (no {COMPLETE} marker): the run died while saving it. "
                              f"Pass an earlier checkpoint's folder instead ({INSPECT_HINT}).")
        if checkpoints.is_dir() or (path / "config.yaml").is_file():  # a run that has saved none (yet)
            raise ExportError(f"{path} holds no complete checkpoint yet: its run has saved none (train.save_interval "
                              f"steps, or its end, save one; {INSPECT_HINT}).")
        raise ExportError(f"no complete checkpoint under {path}: pass a run dir, its checkpoints/ dir or a "
                          "checkpoints/stepNNNNNNNN dir.")
    check(checkpoints / tag)
    return checkpoints.parent, checkpoints, tag


def check(folder: Path) -> None:
    """Refuse a checkpoint whose files no longer match its manifest."""
    try:
        problems = manifest.verify(folder)
    except OSError as exc:
        problems = [str(exc)]
    if problems:
        raise ExportError(f"{folder} is damaged: {problems[0]}" + (f" (and {len(problems) - 1} more)" if
                                                                   len(problems) > 1 else "") +
                          f". Pass an earlier checkpoint's folder instead ({INSPECT_HINT}).")


def _full_state_dict(checkpoints: Path, tag: str, gather_zero) -> dict:
    """The model's weights in fp32: gathered from the ZeRO partitions' fp32 master copies, or, for a run
    without ZeRO (whose every rank held the whole model), read from the one model-states file."""
    import torch

    folder = checkpoints / tag
    if any(folder.glob("*zero_pp_rank_*")):
        return gather_zero(str(checkpoints), tag=tag)
    states = folder / "mp_rank_00_model_states.pt"
    if not states.exists():
        raise ExportError(f"{folder} holds neither ZeRO partitions nor {states.name}: is it a DeepSpeed checkpoint?")
    module = torch.load(states, map_location="cpu", weights_only=False)["module"]
    return {key: tensor.float() for key, tensor in module.items()}


def stop_on_the_tokenizers_end_of_text(configs: list, ours) -> None:
    """A release continued with another tokenizer (model.init_from beside a data.tokenizer of its own) kept the
    release's bos/eos/pad ids in its model config and generation config, which in this tokenizer may be other
    tokens: generate() would never stop on the end of text the run trained on. Each of ``configs`` whose eos ids
    do not include the tokenizer's end of text takes the tokenizer's ids (``ours``: what the family gives a run
    of its own); the others keep theirs (Llama 3's several stop tokens, say)."""
    for config in configs:
        eos = config.eos_token_id
        if ours.eos_token_id in (eos if isinstance(eos, list) else [eos]):
            continue
        log.warning("the release's %s stops on token id %s, not on this run's end of text (id %d: its tokenizer is "
                    "not the release's): the export's takes the tokenizer's bos, eos and pad", type(config).__name__,
                    eos, ours.eos_token_id)
        for name in ("bos_token_id", "eos_token_id", "pad_token_id"):
            setattr(config, name, getattr(ours, name))


def recorded_end_of_document(folder: Path) -> str | None:
    """The token that ended each document of the run's data (--append-eod), from the folder's record; None for a
    folder made elsewhere or exported before the record kept it."""
    try:
        token = json.loads((folder / EXPORT_RECORD).read_text()).get("end_of_document")
    except (OSError, json.JSONDecodeError, AttributeError):
        return None
    return token if isinstance(token, str) else None


def recorded_training(folder: Path) -> dict | None:
    """How the run behind an export trained (``trained_settings``), read back from the folder's record; None
    for a folder made elsewhere, or one exported before the record kept it (said with a warning)."""
    record = folder / EXPORT_RECORD
    if not record.is_file():
        return None
    try:
        trained = json.loads(record.read_text()).get("trained")
    except (json.JSONDecodeError, AttributeError):
        trained = None
    if trained is None:
        log.warning("%s does not say how the run trained (an export made before pretrain-export kept it): scoring "
                    "with the model family's mask share and pieces of the model's context; export the checkpoint "
                    "again, or pass --max-length and --mask-prob as the run trained", record)
    return trained


def trained_settings(run_dir: Path) -> dict | None:
    """How the run trained, as far as scoring its export needs it (``pretrain-eval`` scores a masked LM on
    pieces of its sample length, masked at its share): kept in the export, which has no run config."""
    from pretrain.config import ConfigError, load_config

    if not (run_dir / "config.yaml").is_file():
        return None
    try:
        data = load_config(str(run_dir / "config.yaml")).data
    except ConfigError as exc:  # the weights export all the same; pretrain-eval then takes the family's defaults
        log.warning("%s cannot be read (%s): the export does not record how the run trained", run_dir / "config.yaml",
                    str(exc).splitlines()[0])
        return None
    return {"seq_len": data.seq_len, "mask_prob": data.mask_prob, "whole_word_masking": data.whole_word_masking,
            "whole_word_unit": data.whole_word_unit}


def export_checkpoint(source: str | os.PathLike, output: str | os.PathLike, overwrite: bool = False) -> Path:
    from deepspeed.utils.zero_to_fp32 import get_fp32_state_dict_from_zero_checkpoint
    from safetensors.torch import save_file
    from transformers import AutoConfig, GenerationConfig

    from pretrain.model.families import family_for_model_type
    from pretrain.tokenization import load_tokenizer

    run_dir, checkpoints, tag = resolve_checkpoint(source)
    output = Path(output)
    if output.exists() and any(output.iterdir()) and not overwrite:
        raise ExportError(f"{output} exists and is not empty: pass --overwrite or choose another folder.")
    model_config = AutoConfig.from_pretrained(run_dir / "model")
    architecture = model_config.architectures[0]
    family = family_for_model_type(model_config.model_type)
    if family is None:
        raise ExportError(f"{run_dir / 'model'} holds a {model_config.model_type} model, which no model family exports")
    cls = family.architecture_class(architecture)
    trained = trained_settings(run_dir)
    tokenizer = load_tokenizer(run_dir / "tokenizer", family.tokenizer_roles)
    end_of_document = tokenizer.specials.tokens["eod"]  # what --append-eod wrote: an encoder's eos becomes its SEP
    released = run_dir / "model" / "generation_config.json"  # a continued release's own (model.init_from)
    ours = family.generation_config(tokenizer.model_ids)  # what a run of its own would export
    generation = GenerationConfig.from_pretrained(released.parent) if released.exists() else ours
    if ours is not None:  # a decoder: a release's configs (a run's own already name the tokenizer's ids)
        stop_on_the_tokenizers_end_of_text([model_config, generation] if released.exists() else [model_config], ours)
    if generation is not None and generation.pad_token_id is None:  # batched generate pads with the tokenizer's own
        generation.pad_token_id = tokenizer.specials.ids.get("pad", tokenizer.specials.eod)
    state = _full_state_dict(checkpoints, tag, get_fp32_state_dict_from_zero_checkpoint)
    weights, seen = {}, set()
    for key, tensor in state.items():
        if key.startswith("hf.") and tensor.data_ptr() not in seen:  # tied weights are stored once
            seen.add(tensor.data_ptr())
            weights[key.removeprefix("hf.")] = tensor.contiguous()
    staging = output.with_name(f"{output.name}.tmp-{os.getpid()}")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    model_config.save_pretrained(staging)
    save_file(weights, str(staging / "model.safetensors"), metadata={"format": "pt"})
    _, info = cls.from_pretrained(staging, output_loading_info=True)
    if info["missing_keys"] or info["unexpected_keys"]:
        shutil.rmtree(staging, ignore_errors=True)
        raise ExportError(f"{checkpoints / tag} does not match {architecture}: missing {info['missing_keys'][:5]}, "
                          f"unexpected {info['unexpected_keys'][:5]}")
    if family.sequence_wrap:
        tokenizer.for_encoder(*family.sequence_wrap)
    token_types = getattr(model_config, "type_vocab_size", 0) > 0  # BERT's segments; ModernBERT has none
    tokenizer.save(staging, model_max_length=model_config.max_position_embeddings,
                   model_input_names=None if token_types else ["input_ids", "attention_mask"])
    if generation is not None:
        generation.save_pretrained(staging)
    record = {"checkpoint": str(checkpoints / tag), "trained": trained, "end_of_document": end_of_document}
    (staging / EXPORT_RECORD).write_text(json.dumps(record, indent=1))
    if output.exists():
        shutil.rmtree(output)
    os.replace(staging, output)
    log.info("exported %s -> %s (%s)", checkpoints / tag, output, architecture)
    return output
