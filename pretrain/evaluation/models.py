"""The model ``pretrain-eval`` scores: a Hugging Face folder, or a run dir / checkpoint exported to one.

A run dir (its newest complete checkpoint), its ``checkpoints/`` dir or one ``checkpoints/stepN`` dir
goes through ``pretrain.export`` into a temporary folder, exactly as ``pretrain-export`` writes it,
so every family that exports is evaluated by the same transformers class users will load. The
folder is then loaded with ``AutoModelForCausalLM`` or ``AutoModelForMaskedLM`` (its architecture
decides) and ``AutoTokenizer``.
"""

from __future__ import annotations

import contextlib
import logging
import os
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import torch

from pretrain.export import ExportError, export_checkpoint, recorded_end_of_document, resolve_checkpoint

log = logging.getLogger(__name__)
OBJECTIVES = ("clm", "mlm")


class EvalError(ValueError):
    """A model or input ``pretrain-eval`` cannot score; the message says what to pass instead."""


@dataclass
class EvalModel:
    model: torch.nn.Module  # in eval mode, on its device
    tokenizer: object  # transformers' tokenizer of the folder
    folder: Path  # the Hugging Face folder it was loaded from (a temporary export for a run dir)
    objective: str  # "clm" or "mlm"
    architecture: str
    run_dir: Path | None  # when a run dir or checkpoint was given: where its config.yaml is
    checkpoint: str | None
    end_of_document: int | None  # the id ending each document of data made for it (--append-eod)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device


@contextlib.contextmanager
def open_model(source: str | os.PathLike, device: str = "auto", dtype: str = "auto", objective: str | None = None,
               work_dir: str | None = None) -> Iterator[EvalModel]:
    """The model at ``source`` ready to score; a run dir's export is removed on leaving."""
    path = Path(source)
    if not path.exists():
        raise EvalError(f"model {source} does not exist: pass a run dir, one of its checkpoints/stepNNNNNNNN dirs, or "
                        "a Hugging Face model folder (one with config.json).")
    if (path / "config.json").is_file():
        yield _load(path, device, dtype, objective, None, None)
        return
    try:
        run_dir, checkpoints, tag = resolve_checkpoint(path)
    except ExportError as exc:
        if is_run_folder(path):  # a run or a checkpoint, but not one to score (damaged, incomplete): its reason
            raise EvalError(str(exc)) from None
        present = ", ".join(sorted(p.name for p in path.iterdir())[:8]) if path.is_dir() else "a file"
        raise EvalError(f"{source} is not a model: a Hugging Face folder holds config.json and a run dir a "
                        f"checkpoints/ dir, but it holds {present or 'nothing'}.") from None
    with tempfile.TemporaryDirectory(prefix="pretrain-eval-", dir=work_dir) as temp:
        folder = export_checkpoint(path, Path(temp) / "hf")
        yield _load(folder, device, dtype, objective, run_dir, str(checkpoints / tag))


def is_run_folder(path: Path) -> bool:
    """A run dir, its checkpoints/ dir or one of its checkpoints (whatever state it is in)."""
    return ((path / "checkpoints").is_dir() or (path / "config.yaml").is_file() or path.name == "checkpoints"
            or (path.name.startswith("step") and path.parent.name == "checkpoints"))


def objective_of(config) -> str | None:
    """"clm" or "mlm" from a transformers config's architecture (or model type), None if neither."""
    from transformers.models.auto.modeling_auto import (
        MODEL_FOR_CAUSAL_LM_MAPPING_NAMES,
        MODEL_FOR_MASKED_LM_MAPPING_NAMES,
    )

    for name in config.architectures or []:
        if name.endswith(("ForMaskedLM", "ForPreTraining")):
            return "mlm"
        if name.endswith(("ForCausalLM", "LMHeadModel")):
            return "clm"
    model_type = getattr(config, "model_type", None)
    if model_type in MODEL_FOR_MASKED_LM_MAPPING_NAMES and not getattr(config, "is_decoder", False):
        return "mlm"
    return "clm" if model_type in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES else None


def _load(folder: Path, device: str, dtype: str, objective: str | None, run_dir: Path | None,
          checkpoint: str | None) -> EvalModel:
    from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForMaskedLM, AutoTokenizer

    try:
        config = AutoConfig.from_pretrained(folder)
    except (OSError, ValueError, KeyError) as exc:
        raise EvalError(f"{folder / 'config.json'} is not a transformers model config ({exc}).") from None
    objective = objective or objective_of(config)
    if objective not in OBJECTIVES:
        raise EvalError(f"{folder} holds a {getattr(config, 'model_type', '?')} model "
                        f"({', '.join(config.architectures or ['no architecture'])}), neither a causal nor a masked LM "
                        "that pretrain-eval can tell; pass --objective clm or --objective mlm.")
    try:
        tokenizer = AutoTokenizer.from_pretrained(folder)
    except (OSError, ValueError, TypeError) as exc:
        raise EvalError(f"{folder} has no tokenizer transformers can load ({str(exc).splitlines()[0]}); a model "
                        "folder for pretrain-eval needs its tokenizer beside it (pretrain-export writes it).") from None
    # documents are encoded whole and cut into windows here: transformers' too-long warning does not apply
    tokenizer.deprecation_warnings["sequence-length-is-longer-than-the-specified-maximum"] = True
    auto = AutoModelForCausalLM if objective == "clm" else AutoModelForMaskedLM
    torch_dtype = "auto" if dtype == "auto" else getattr(torch, dtype)
    target = torch.device(("cuda" if torch.cuda.is_available() else "cpu") if device == "auto" else device)
    try:
        model = auto.from_pretrained(folder, dtype=torch_dtype)
    except (OSError, ValueError) as exc:
        raise EvalError(f"{folder} cannot be loaded as {auto.__name__} ({str(exc).splitlines()[0]}).") from None
    architecture = (config.architectures or [type(model).__name__])[0]
    log.info("scoring %s (%s as %s, %s) on %s", folder, architecture, type(model).__name__, objective, target)
    return EvalModel(model.to(target).eval(), tokenizer, folder, objective, architecture, run_dir, checkpoint,
                     end_of_document(folder, tokenizer))


def end_of_document(folder: Path, tokenizer) -> int | None:
    """The id pretrain-preprocess's --append-eod ended each document with for this model: its run's end-of-text
    token, as its export recorded it (an encoder's exported tokenizer names its SEP as eos), else the one it
    finds in the folder's tokenizer (a folder made elsewhere)."""
    from pretrain.tokenization import TokenizerError, load_tokenizer

    token = recorded_end_of_document(folder)
    if token is not None and token in tokenizer.get_vocab():
        return tokenizer.convert_tokens_to_ids(token)
    try:
        return load_tokenizer(folder, quiet=True).specials.eod
    except TokenizerError:
        return tokenizer.eos_token_id
