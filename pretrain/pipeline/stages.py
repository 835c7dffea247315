"""The stages: for each, what it reads and writes under the workdir, the ``pretrain-*`` command that runs it
on this machine and the Slurm jobs that run it on a cluster, and how to tell that its outputs are complete.

    clean       input            -> WORKDIR/clean/part-*.jsonl.zst, report.md   pretrain-clean
    tokenizer   clean or input   -> WORKDIR/tokenizer/                          pretrain-train-tokenizer
    preprocess  + tokenizer      -> WORKDIR/data/corpus_text_{document,sentence}.bin/.idx   pretrain-preprocess
    train       + dataset        -> WORKDIR/run/ (checkpoints, metrics, plots)  pretrain-train (deepspeed)
    export      run              -> WORKDIR/hf/                                 pretrain-export

A new stage (an evaluation after export, say) is one more ``Stage`` in ``STAGES``: its name, a function
that builds its plan from the recipe, and one that says whether its outputs are complete.
"""

from __future__ import annotations

import dataclasses
import glob
import json
import os
import shlex
import shutil
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from pretrain.pipeline.recipe import EXECUTION_FIELDS, Recipe, input_paths


@dataclass(frozen=True)
class Layout:
    """Where each stage writes, under the workdir."""

    workdir: Path
    key: str = "text"
    """The text field the datasets are named after (PREFIX_<key>_document)."""
    level: str = "document"
    """document, or sentence for a masked LM's sentence datasets."""

    @property
    def clean(self) -> Path:
        return self.workdir / "clean"

    @property
    def tokenizer(self) -> Path:
        return self.workdir / "tokenizer"

    @property
    def data_prefix(self) -> Path:
        return self.workdir / "data" / "corpus"

    @property
    def dataset(self) -> Path:
        return self.workdir / "data" / f"corpus_{self.key}_{self.level}"

    @property
    def run(self) -> Path:
        return self.workdir / "run"

    @property
    def hf(self) -> Path:
        return self.workdir / "hf"

    @property
    def stamps(self) -> Path:
        return self.workdir / ".pipeline"

    @property
    def logs(self) -> Path:
        return self.workdir / "logs"


def layout_for(recipe: Recipe) -> Layout:
    split = "preprocess" in recipe.stages and _split_sentences(recipe)
    key = "text" if "clean" in recipe.stages else recipe.input.json_key
    return Layout(recipe.workdir, key, "sentence" if split else "document")


@dataclass(frozen=True)
class Command:
    """One command as it runs here (``argv``) and as a person would type it (``shown``)."""

    argv: list[str]
    shown: list[str]
    stop_file: str | None = None
    """A training command's run.dir/STOP: how an interrupted pipeline asks its ranks to save and stop."""

    def __str__(self) -> str:
        return shlex.join(self.shown)


@dataclass(frozen=True)
class Job:
    """One sbatch submission of a stage under Slurm."""

    what: str
    """How the job is announced: "filter array", "dedup", "job"."""
    script: str
    """The batch script, relative to the repository: slurm/*.sbatch."""
    args: list[str]
    """Its arguments (those of the tools/*.py script it runs)."""
    array: int | None = None
    """Tasks of an array job."""
    env: dict[str, str] = field(default_factory=dict)
    """Variables for the script (--export=ALL,...)."""


@dataclass
class StagePlan:
    name: str
    settings: dict
    """Everything that decides the stage's outputs, flattened ``section.key``: its hash is in the stamp."""
    inputs: list[str]
    """Files, globs or folders it reads (absolute)."""
    outputs: list[str]
    """Files, globs or folders it writes, as recorded in the stamp (absolute)."""
    commands: list[Command]
    """What runs on this machine, in order."""
    jobs: list[Job]
    """What runs under Slurm, each job after the previous one."""
    sbatch: list[str]
    """The stage's own sbatch options."""
    replace: str = "overwrite"
    """How stale outputs go before a rerun: "overwrite" (the command replaces them atomically), "remove"
    (removed first: a later run could otherwise leave files of the old one beside its own), "set aside"
    (a training run dir is renamed, never deleted)."""
    stale_paths: list[str] = field(default_factory=list)
    """What "remove" removes or "set aside" renames."""
    run_only: frozenset[str] = frozenset()
    """Settings that change how the stage runs, never what it makes: left out of ``settings`` (and ignored in
    stamps written while they were still in)."""
    continued_by: frozenset[str] = frozenset()
    """Settings whose increase runs the stage again on its previous outputs instead of anew: a training run goes
    on from its newest checkpoint to a train.steps past it (one it has reached starts a new run)."""
    reached: int | None = None
    """How far the previous outputs got, in the unit of ``continued_by`` (a training run's newest checkpoint
    step): a continuing setting must go past it; None: compared with the stamp's setting instead."""


@dataclass(frozen=True)
class Stage:
    name: str
    plan: Callable[[Recipe, Layout], StagePlan]
    incomplete: Callable[[Layout], str | None]
    """Why the stage's outputs are not complete, or None when they are (checked before a stamp is written)."""


def _module(module: str, shown: str, args: list[str]) -> Command:
    return Command([sys.executable, "-m", module, *args], [shown, *args])


def _settings(section: str, settings) -> dict:
    """The stage's settings that decide its outputs, as ``section.key`` (execution settings left out)."""
    return {f"{section}.{k}": v for k, v in dataclasses.asdict(settings).items() if k not in EXECUTION_FIELDS}


def _normalized(settings: dict) -> dict:
    return json.loads(json.dumps(settings, default=str))


def _text_inputs(recipe: Recipe, layout: Layout) -> tuple[list[str], list[str], dict]:
    """(inputs, the reading flags, the settings they bring) of a stage that reads text: the clean parts when
    the recipe cleans, else the recipe's input."""
    if "clean" in recipe.stages:
        return [str(layout.clean / "part-*.jsonl.zst")], ["--json-keys", "text"], {"input": "clean"}
    settings = {f"input.{k}": v for k, v in dataclasses.asdict(recipe.input).items()}
    return input_paths(recipe), _reading_flags(recipe, recipe.input.json_key), settings


def _reading_flags(recipe: Recipe, key: str) -> list[str]:
    source = recipe.input
    flags = ["--json-keys", key, "--text-mode", source.text_mode]
    if source.format:
        flags += ["--input-format", source.format]
    if source.json_path:
        flags += ["--json-path", source.json_path]
    if source.skip_bad_input:
        flags.append("--skip-bad-input")
    return flags


def _workers(value: int | None) -> list[str]:
    return ["--workers", str(value)] if value else []


def plan_clean(recipe: Recipe, layout: Layout) -> StagePlan:
    clean = recipe.stages["clean"]
    inputs = input_paths(recipe)
    args = ["--input", *inputs, *_reading_flags(recipe, recipe.input.json_key), "--output", str(layout.clean),
            "--language", clean.language, "--near-threshold", str(clean.near_threshold), "--part-mb", str(clean.part_mb)]
    if clean.disable:
        args += ["--disable", *clean.disable]
    if clean.settings:
        args += ["--set", *clean.settings]
    settings = {**_settings("clean", clean), **{f"input.{k}": v for k, v in dataclasses.asdict(recipe.input).items()}}
    shards = clean.shards
    return StagePlan(
        "clean", settings, inputs, [str(layout.clean / "part-*.jsonl.zst"), str(layout.clean / "report.json")],
        [_module("pretrain.cli.clean_corpus", "pretrain-clean", [*args, *_workers(clean.workers), "--overwrite"])],
        [Job(f"filter array ({shards} shard{'s' * (shards > 1)})", "slurm/clean.sbatch", args, array=shards),
         Job("dedup", "slurm/clean.sbatch", args, env={"CLEAN_STAGE": "dedup", "NUM_SHARDS": str(shards)})],
        clean.sbatch, replace="remove", stale_paths=[str(layout.clean)])


def clean_incomplete(layout: Layout) -> str | None:
    report = layout.clean / "report.json"
    if not report.exists():
        return f"{report} is missing"
    parts = json.loads(report.read_text(encoding="utf-8"))["kept"]["parts"]
    missing = [p for p in parts if not (layout.clean / p).exists()]
    if missing:
        return f"{layout.clean / missing[0]} is missing"
    if not parts:
        return f"the cleaning kept no document (see {layout.clean / 'report.md'}): nothing to train on"
    return None


def _objective_default(recipe: Recipe, value, clm, mlm):
    if value is not None:
        return value
    return clm if recipe.objective == "clm" else mlm


def _split_sentences(recipe: Recipe) -> bool:
    return bool(_objective_default(recipe, recipe.stages["preprocess"].split_sentences, False, True))


def plan_tokenizer(recipe: Recipe, layout: Layout) -> StagePlan:
    tok = recipe.stages["tokenizer"]
    inputs, flags, read_settings = _text_inputs(recipe, layout)
    kind = _objective_default(recipe, tok.type, "bpe", "wordpiece")
    args = ["--type", kind, "--input", *inputs, *flags, "--output", str(layout.tokenizer),
            "--min-frequency", str(tok.min_frequency), "--max-mb", str(tok.max_mb)]
    if tok.vocab_size:
        args += ["--vocab-size", str(tok.vocab_size)]
    if tok.special_tokens:
        args += ["--special-tokens", *tok.special_tokens]
    if tok.lowercase:
        args.append("--lowercase")
    settings = {**_settings("tokenizer", tok), "tokenizer.type": kind, **read_settings}
    command = _module("pretrain.cli.train_tokenizer", "pretrain-train-tokenizer", [*args, "--overwrite"])
    return StagePlan("tokenizer", settings, inputs, [str(layout.tokenizer)], [command],
                     [Job("job", "slurm/step.sbatch", ["tools/train_tokenizer.py", *args, "--overwrite"])], tok.sbatch)


def tokenizer_incomplete(layout: Layout) -> str | None:
    if not layout.tokenizer.is_dir() or not any(layout.tokenizer.iterdir()):
        return f"{layout.tokenizer} is missing or empty"
    return None


def plan_preprocess(recipe: Recipe, layout: Layout) -> StagePlan:
    pre = recipe.stages["preprocess"]
    inputs, flags, read_settings = _text_inputs(recipe, layout)
    split = _split_sentences(recipe)
    eod = bool(_objective_default(recipe, pre.append_eod, True, False))
    args = ["--input", *inputs, *flags, "--tokenizer", str(layout.tokenizer), "--output-prefix", str(layout.data_prefix)]
    args += ["--append-eod"] * eod + ["--split-sentences"] * split
    settings = {**_settings("preprocess", pre), "preprocess.append_eod": eod, "preprocess.split_sentences": split,
                **read_settings}
    outputs = [f"{layout.dataset}.bin", f"{layout.dataset}.idx"]
    command = _module("pretrain.cli.preprocess_data", "pretrain-preprocess", [*args, *_workers(pre.workers), "--overwrite"])
    shards = pre.shards
    return StagePlan(
        "preprocess", settings, [*inputs, str(layout.tokenizer)], outputs, [command],
        [Job(f"array ({shards} shard{'s' * (shards > 1)})", "slurm/preprocess.sbatch", args, array=shards),
         Job("merge", "slurm/merge.sbatch", ["--input", str(layout.dataset), "--overwrite"])],
        pre.sbatch, replace="remove", stale_paths=[f"{layout.dataset}.shard-*"])


def preprocess_incomplete(layout: Layout) -> str | None:
    for suffix in (".bin", ".idx"):
        if not Path(f"{layout.dataset}{suffix}").exists():
            return f"{layout.dataset}{suffix} is missing"
    return None


def _train_outputs(layout: Layout) -> list[str]:
    """The summary and the newest checkpoint's name (``train_incomplete`` checks that checkpoint): older
    checkpoints may be deleted to free disk without making the run stale."""
    return [str(layout.run / "summary.json"), str(layout.run / "checkpoints" / "latest")]


TRAINER_RUN_ONLY = frozenset({
    "model.activation_checkpointing", "model.checkpoint_layers", "model.compile", "model.compile_backend",
    "model.attention", "model.lm_head", "model.zero3_whole_blocks", "data.num_workers", "data.cache_dir",
    "data.index_wait_minutes", "optim.fused", "train.micro_batch", "train.device_memory_gib", "train.memory_margin",
    "train.eval_interval", "train.log_interval", "train.save_interval", "train.keep_last", "train.exit_interval",
    "train.exit_minutes", "train.max_nonfinite_steps", "train.peak_tflops", "train.stop_check_interval",
    "train.distributed_timeout_minutes", "run.tensorboard", "run.plots", "run.plot_interval_minutes", "run.wandb"})
"""Trainer keys that change how a run goes (speed, memory, logs, checkpoints kept, when it stops), never the
model it trains: changing one resumes the run as it is."""


def plan_train(recipe: Recipe, layout: Layout) -> StagePlan:
    from pretrain.config import load_config
    from pretrain.distributed import free_port

    train = recipe.stages["train"]
    owned = [f"data.tokenizer={layout.tokenizer}", f"data.prefixes={json.dumps([str(layout.dataset)])}"]
    args = ["--config", train.config, *train.overrides, *owned]
    config = load_config(train.config, [*train.overrides, *owned, f"run.dir={layout.run}"])
    flat = _flatten(config.to_dict())
    settings = {"train.config": train.config, **{k: v for k, v in flat.items() if k not in TRAINER_RUN_ONLY}}
    local = [*args, f"run.dir={layout.run}"]
    if train.ranks > 1:
        launcher = shutil.which("deepspeed") or str(Path(sys.executable).parent / "deepspeed")
        port = str(free_port())
        command = Command([launcher, "--num_gpus", str(train.ranks), "--master_port", port, "--module",
                           "pretrain.cli.train", *local],
                          ["deepspeed", "--num_gpus", str(train.ranks), "--master_port", port, "--module",
                           "pretrain.cli.train", *local])
    else:
        command = _module("pretrain.cli.train", "pretrain-train", local)
    command = dataclasses.replace(command, stop_file=str(layout.run / "STOP"))
    return StagePlan("train", settings, [str(layout.tokenizer), f"{layout.dataset}.bin", f"{layout.dataset}.idx"],
                     _train_outputs(layout), [command],
                     [Job("job", "slurm/train.sbatch", args, env={"RUN_DIR": str(layout.run)})], train.sbatch,
                     replace="set aside", stale_paths=[str(layout.run)], run_only=TRAINER_RUN_ONLY,
                     continued_by=frozenset({"train.steps"}), reached=_newest_checkpoint_step(layout))


def _newest_checkpoint_step(layout: Layout) -> int | None:
    """The step of the checkpoint a relaunch resumes from (the newest complete one), None without one."""
    from pretrain.checkpoint import latest_complete, step_of

    tag = latest_complete(layout.run / "checkpoints")
    return None if tag is None else step_of(tag)


def train_incomplete(layout: Layout) -> str | None:
    summary_file = layout.run / "summary.json"
    if not summary_file.exists():
        return f"{summary_file} is missing: the run has not ended"
    summary = json.loads(summary_file.read_text(encoding="utf-8"))
    if summary.get("status") != "finished":
        return (f"the run is not finished ({summary.get('status')}, step {summary.get('step')} of "
                f"{summary.get('steps')}): run the pipeline again to resume it")
    latest = layout.run / "checkpoints" / "latest"
    if not latest.exists():
        return f"{latest} is missing"
    tag = latest.read_text().strip()
    if not (layout.run / "checkpoints" / tag / "COMPLETE").exists():
        return f"the latest checkpoint {tag} is not complete"
    return None


def plan_export(recipe: Recipe, layout: Layout) -> StagePlan:
    args = [str(layout.run), str(layout.hf), "--overwrite"]
    return StagePlan("export", {"export": "hf"}, _train_outputs(layout), [str(layout.hf)],
                     [_module("pretrain.cli.export_hf", "pretrain-export", args)],
                     [Job("job", "slurm/step.sbatch", ["tools/export_hf.py", *args])], recipe.stages["export"].sbatch)


def export_incomplete(layout: Layout) -> str | None:
    for name in ("config.json", "model.safetensors"):
        if not (layout.hf / name).exists():
            return f"{layout.hf / name} is missing"
    return None


STAGES: list[Stage] = [
    Stage("clean", plan_clean, clean_incomplete),
    Stage("tokenizer", plan_tokenizer, tokenizer_incomplete),
    Stage("preprocess", plan_preprocess, preprocess_incomplete),
    Stage("train", plan_train, train_incomplete),
    Stage("export", plan_export, export_incomplete),
    # an evaluation stage (pretrain-eval on the exported model) goes here: Stage("eval", plan_eval, eval_incomplete)
]

def stage_named(name: str) -> Stage:
    return next(stage for stage in STAGES if stage.name == name)


def plans(recipe: Recipe) -> list[StagePlan]:
    """The plans of the recipe's stages, in order; settings normalized as a stamp stores them."""
    layout = layout_for(recipe)
    out = []
    for stage in STAGES:
        if stage.name in recipe.stages:
            plan = stage.plan(recipe, layout)
            plan.settings = _normalized(plan.settings)
            out.append(plan)
    return out


def _flatten(values: dict, prefix: str = "") -> dict:
    out = {}
    for key, value in values.items():
        if isinstance(value, dict):
            out.update(_flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def remove_stale(plan: StagePlan) -> str | None:
    """Clear a stale stage's outputs as its ``replace`` says; returns what was done, for the log."""
    if plan.replace == "remove":
        removed = 0
        for pattern in plan.stale_paths:
            for path in glob.glob(pattern):
                if os.path.isdir(path):
                    shutil.rmtree(path)
                else:
                    os.remove(path)
                removed += 1
        return f"removed the stale outputs ({removed} path(s))" if removed else None
    if plan.replace == "set aside":
        for path in map(Path, plan.stale_paths):
            if path.exists():
                aside = path.with_name(f"{path.name}.replaced-{time.strftime('%Y%m%d-%H%M%S')}")
                path.rename(aside)
                return f"the previous run {path} was made with other settings or data: set aside as {aside}"
    return None
