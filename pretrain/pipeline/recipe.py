"""A pipeline recipe: a YAML file with one section per stage (and ``input``), typed like the trainer's
config, plus ``STAGE.key=value`` overrides from the command line.

    workdir: work/kowiki-gpt2          # every stage writes under it
    input: {paths: [kowiki-latest-pages-articles-multistream.xml.bz2]}
    clean: {language: ko}              # optional: without it the tokenizer and preprocessing read the input
    tokenizer: {vocab_size: 50257}
    preprocess: {}
    train: {config: gpt2_small, ranks: 8, overrides: [train.steps=100000]}
    export: {}

A stage is part of the recipe when its section is there. ``train.overrides`` are the trainer's own
``section.key=value`` overrides; on the command line they are written as the trainer takes them
(``train.steps=200``, ``model.dropout=0.1``, ``optim.lr=3e-4``), while ``train.config``, ``train.ranks``
and ``train.sbatch`` set the stage itself.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import yaml

from pretrain.config import load_config, validate
from pretrain.config.loading import build_section, find_yaml
from pretrain.config.schema import Config, ConfigError, TrainConfig

RECIPES = Path(__file__).resolve().parent.parent / "recipes"
PACKAGE = Path(__file__).resolve().parent.parent
TRAINER_SECTIONS = tuple(f.name for f in dataclasses.fields(Config))
OWNED_BY_PIPELINE = ("data.tokenizer", "data.prefixes", "run.dir")
EXECUTION_FIELDS = ("workers", "shards", "sbatch", "ranks")
"""Settings that change how a stage runs, never what it writes: they do not make a stage stale."""


class RecipeError(ValueError):
    """A recipe or override that cannot be used; the message names the file and what to fix."""


@dataclass
class InputSettings:
    paths: list[str] = field(default_factory=list)
    """Files, globs or folders of raw text in any format the commands read (jsonl, text, parquet, Wikipedia
    and Namuwiki dumps, compressed or not). Relative paths are taken from the directory the pipeline runs
    in; ``{package}`` is the installed pretrain package (the demo's corpus)."""
    format: str | None = None
    """The input format when the file name does not tell it (the commands' --input-format)."""
    json_key: str = "text"
    """The field (or column) holding the text."""
    json_path: str | None = None
    """Nested JSON: where the documents are, e.g. 'document[].paragraph[].form' (NIKL)."""
    text_mode: Literal["line", "paragraph"] = "line"
    """Plain text: a document per line, or documents separated by blank lines."""
    skip_bad_input: bool = False
    """Skip and count unreadable records instead of stopping at the first."""


@dataclass
class CleanSettings:
    language: Literal["auto", "ko", "de"] = "auto"
    """Whose rule defaults apply (auto: per document, ko where a fifth of the letters are Hangul)."""
    disable: list[str] = field(default_factory=list)
    """Rules switched off: boilerplate, length, script, repetition, exact, near."""
    settings: list[str] = field(default_factory=list)
    """Rule tunings as NAME=VALUE (pretrain-clean's --set), e.g. min_chars=300."""
    near_threshold: float = 0.8
    """Jaccard similarity from which documents are near duplicates."""
    part_mb: float = 1024.0
    """Uncompressed MB of text per output part."""
    workers: int | None = None
    """Worker processes (default: every core; under Slurm: the job's CPUs)."""
    shards: int = 1
    """Under --slurm: tasks of the filter array job (the dedup job then reads them all)."""
    sbatch: list[str] = field(default_factory=list)
    """Under --slurm: sbatch options for this stage's jobs (after the ones given to --slurm)."""


@dataclass
class TokenizerSettings:
    type: Literal["bpe", "wordpiece", "spm-unigram", "spm-bpe"] | None = None
    """The tokenizer kind; default: bpe for a causal LM, wordpiece for a masked LM."""
    vocab_size: int | None = None
    """Tokens, special tokens included (default: the command's, 50,257 for bpe, 32,000 otherwise)."""
    min_frequency: int = 2
    """Drop rarer pairs (bpe, wordpiece)."""
    max_mb: float = 64
    """MB of text sampled to train on, spread over the input files."""
    special_tokens: list[str] | None = None
    """Special tokens (default: the command's for the kind)."""
    lowercase: bool = False
    """WordPiece: uncased."""
    sbatch: list[str] = field(default_factory=list)
    """Under --slurm: sbatch options for this stage's job."""


@dataclass
class PreprocessSettings:
    append_eod: bool | None = None
    """End every document with the end-of-text token (default: for a causal LM)."""
    split_sentences: bool | None = None
    """One sequence per sentence, a _sentence dataset (default: for a masked LM)."""
    workers: int | None = None
    """Encoding processes (default: every core; under Slurm: the job's CPUs)."""
    shards: int = 1
    """Under --slurm: tasks of the preprocessing array job (a merge job joins them)."""
    sbatch: list[str] = field(default_factory=list)
    """Under --slurm: sbatch options for this stage's jobs."""


@dataclass
class TrainSettings:
    config: str = "gpt2_small"
    """The trainer's config: a shipped name (pretrain/configs/) or a path. The model family in it decides
    the objective, and with it the tokenizer's and preprocessing's defaults."""
    overrides: list[str] = field(default_factory=list)
    """The trainer's section.key=value overrides (data.tokenizer, data.prefixes and run.dir are the
    pipeline's)."""
    ranks: int = 1
    """Processes on this machine (one per GPU; CPU ranks without one); under --slurm the job's tasks decide."""
    sbatch: list[str] = field(default_factory=list)
    """Under --slurm: sbatch options for the training job, e.g. [-N, 4, --gpus-per-node=8, --ntasks-per-node=8]."""


@dataclass
class ExportSettings:
    sbatch: list[str] = field(default_factory=list)
    """Under --slurm: sbatch options for the export job."""


SECTIONS: dict[str, type] = {"input": InputSettings, "clean": CleanSettings, "tokenizer": TokenizerSettings,
                             "preprocess": PreprocessSettings, "train": TrainSettings, "export": ExportSettings}


@dataclass
class Recipe:
    path: Path
    """The recipe file."""
    name: str
    """Names the Slurm jobs; default: the file's name."""
    workdir: Path
    """Where every stage's outputs and the stamps go (absolute)."""
    input: InputSettings
    stages: dict[str, object]
    """Settings of the stages the recipe has, by stage name."""

    def trainer_config(self) -> Config:
        """The trainer's config as the train stage will run it (before the pipeline's own keys)."""
        train = self.stages["train"]
        try:
            return load_config(train.config, train.overrides)
        except ConfigError as exc:
            raise RecipeError(f"{self.path}: train: {exc}") from None

    @property
    def objective(self) -> str:
        """"clm" or "mlm", from the model family of the trainer's config (clm without a train stage)."""
        from pretrain.presets import get_preset

        if "train" not in self.stages:
            return "clm"
        preset = self.trainer_config().model.preset
        try:
            return get_preset(preset).objective
        except KeyError as exc:
            raise RecipeError(f"{self.path}: train: {exc.args[0]}") from None


def resolve_recipe_path(name_or_path: str) -> Path:
    """A path, or the name of a shipped recipe (``demo`` -> pretrain/recipes/demo.yaml)."""
    path, names = find_yaml(name_or_path, RECIPES)
    if path is None:
        raise RecipeError(f"recipe {name_or_path!r} not found (shipped recipes: {names})")
    return path


def load_recipe(name_or_path: str, overrides: list[str] | None = None, workdir: str | None = None) -> Recipe:
    """Read a recipe, apply ``STAGE.key=value`` overrides, check every key and type: all problems at once."""
    path = resolve_recipe_path(name_or_path)
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark else str(path)
        raise RecipeError(f"{where}: not valid YAML ({getattr(exc, 'problem', None) or exc}): fix the file") from None
    if not isinstance(raw, dict):
        raise RecipeError(f"{path}: a recipe is a mapping of sections ({', '.join(SECTIONS)}), not {type(raw).__name__}")
    problems: list[str] = []
    name = raw.pop("name", None) or path.stem
    chosen_workdir = workdir or raw.pop("workdir", None) or f"work/{name}"
    raw.pop("workdir", None)
    raw.pop("description", None)
    for item in overrides or []:
        _apply_override(raw, item, problems)
    built: dict[str, object] = {}
    for section, values in raw.items():
        if section not in SECTIONS:
            problems.append(f"unknown section {section!r} (sections: {', '.join(SECTIONS)}, name, workdir, "
                            "description)")
            continue
        if values is not None and not isinstance(values, dict):
            problems.append(f"{section}: a mapping of key: value, not {values!r}")
            continue
        built[section] = build_section(SECTIONS[section], values or {}, section, problems)
    stages = {name_: settings for name_, settings in built.items() if name_ != "input"}
    recipe = Recipe(path=path, name=str(name), workdir=Path(chosen_workdir).resolve(),
                    input=built.get("input") or InputSettings(), stages=stages)
    wrong_type = {problem.partition("=")[0] for problem in problems}  # "input.paths='x' is not a list[str]"
    problems += [p for p in _check(recipe) if p.split(" ", 1)[0] not in wrong_type]  # not again as "empty"
    if problems:
        raise RecipeError(f"{path}: " + "\n  - ".join(["invalid recipe:"] + problems))
    return recipe


def _apply_override(raw: dict, item: str, problems: list[str]) -> None:
    """``STAGE.key=value`` into the raw recipe; the trainer's keys (``train.steps``, ``model.dropout``) go to
    ``train.overrides`` as the trainer takes them."""
    key, sep, value = item.partition("=")
    section, dot, name = key.partition(".")
    if not sep or not dot or not name:
        problems.append(f"override {item!r} must look like STAGE.key=value (e.g. tokenizer.vocab_size=32000, "
                        "train.steps=200)")
        return
    trainer_key = section in TRAINER_SECTIONS and not (section == "train" and name in _fields(TrainSettings))
    stage_key = difflib.get_close_matches(name, _fields(TrainSettings), n=1, cutoff=0.75) if section == "train" else []
    if trainer_key and stage_key and name not in _fields(TrainConfig):  # train.rank: the stage's train.ranks
        problems.append(f"override {item!r}: unknown key train.{name}; did you mean train.{stage_key[0]} (the "
                        f"train stage's own keys: {', '.join(sorted(_fields(TrainSettings)))})?")
        return
    if trainer_key:
        if "train" not in raw:
            problems.append(f"override {item!r}: the recipe has no train stage")
            return
        train = raw["train"] if isinstance(raw["train"], dict) else {}
        raw["train"] = train
        train["overrides"] = [*(train.get("overrides") or []), item]
        return
    if section in SECTIONS and section not in raw and section != "input":
        problems.append(f"override {item!r}: the recipe has no {section} stage")
        return
    target = raw.setdefault(section, {})
    if not isinstance(target, dict):
        target = raw[section] = {}
    target[name] = yaml.safe_load(value) if value != "" else None


def _fields(cls: type) -> set[str]:
    return {f.name for f in dataclasses.fields(cls)}


def _check(recipe: Recipe) -> list[str]:
    """What the stages need of each other and of the input, and the trainer's config: the problems found."""
    problems = []
    stages = recipe.stages
    needs = {"tokenizer": (), "clean": (), "preprocess": ("tokenizer",), "train": ("tokenizer", "preprocess"),
             "export": ("train",)}
    for stage, required in needs.items():
        for other in required:
            if stage in stages and other not in stages:
                problems.append(f"the {stage} stage needs a {other} stage")
    if not recipe.input.paths:
        problems.append("input.paths is empty: name the files, globs or folders to read")
    for stage in ("clean", "preprocess"):
        if stage in stages and stages[stage].shards < 1:
            problems.append(f"{stage}.shards={stages[stage].shards} must be at least 1")
    if "train" in stages:
        train = stages["train"]
        if train.ranks < 1:
            problems.append(f"train.ranks={train.ranks} must be at least 1")
        for item in train.overrides:
            if not isinstance(item, str) or "=" not in item:
                problems.append(f"train.overrides: {item!r} is not a section.key=value string (quote an override "
                                "holding commas: \"data.split=98,2,0\")")
            elif item.partition("=")[0] in OWNED_BY_PIPELINE:
                problems.append(f"train override {item!r}: {item.partition('=')[0]} is set by the pipeline (its "
                                "tokenizer, dataset and run dir under the workdir)")
    if "train" in stages:  # the trainer's config now, not after hours of cleaning
        from pretrain.presets import get_preset

        train = stages["train"]
        usable = [o for o in train.overrides if isinstance(o, str) and o.partition("=")[0] not in OWNED_BY_PIPELINE]
        placeholder = "<the pipeline's dataset>"  # the data is not there yet: only the problems of the rest
        owned = ["data.tokenizer=tokenizer", f"data.prefixes={json.dumps([placeholder])}"]
        try:
            config = load_config(train.config, [*(o for o in usable if "=" in o), *owned])
            get_preset(config.model.preset)
            validate(config, 1)
        except ConfigError as exc:
            problems += [f"train: {problem}" for problem in exc.problems if placeholder not in problem]
        except KeyError as exc:
            problems.append(f"train: {exc.args[0]}")
    return problems


def input_paths(recipe: Recipe) -> list[str]:
    """The input paths with ``{package}`` expanded and relative paths made absolute."""
    out = []
    for path in recipe.input.paths:
        path = str(path).replace("{package}", str(PACKAGE))
        out.append(path if Path(path).is_absolute() else str(Path.cwd() / path))
    return out
