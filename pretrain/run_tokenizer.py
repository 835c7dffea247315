"""data.tokenizer as every launch of a run reads it: the trainer, its preflight and pretrain-plan alike."""

from __future__ import annotations

from pathlib import Path

from pretrain.checkpoint import resumes
from pretrain.config import Config
from pretrain.model.families import get_family
from pretrain.presets import get_preset
from pretrain.tokenization import LoadedTokenizer, load_tokenizer, run_roles


def load_run_tokenizer(config: Config, source: str | None = None) -> LoadedTokenizer:
    """data.tokenizer (or ``source``, pretrain-plan's --tokenizer) with the special roles the model family adds, and
    on a launch that will resume (RUN_DIR/checkpoints holds a complete checkpoint) those the run saved in
    RUN_DIR/tokenizer: every launch of a run gives the same ids, and a first launch ignores a tokenizer that a
    failed one left."""
    run_dir = Path(config.run.dir)
    roles = get_family(get_preset(config.model.preset).family).tokenizer_roles
    return load_tokenizer(source or config.data.tokenizer,
                          run_roles(roles, run_dir if resumes(run_dir / "checkpoints") else None))
