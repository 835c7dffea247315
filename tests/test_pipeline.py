"""pretrain-pipeline: recipes and their overrides, stages skipped when up to date and rerun (with every later
stage) when a setting or an input changed, --from/--until/--dry-run, a failed or interrupted stage never
recorded as done, the train and export stages (resume or set aside), the shipped recipes, and the demo as
users run it, holding the README's claim about its loss."""

from __future__ import annotations

import json
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pretrain.pipeline.recipe import load_recipe
from pretrain.pipeline.stages import layout_for, plans
from pretrain.pipeline.stamps import Stamp
from pretrain.pipeline.status import decide
from tests.conftest import ROOT, grown_documents, write_jsonl
from tests.distributed import logged_step, train_env

DATA_STAGES = ("clean", "tokenizer", "preprocess")


def write_recipe(folder: Path, corpus: Path, train: bool = False, **extra: str) -> Path:
    text = f"""\
name: t
input:
  paths: [{json.dumps(str(corpus))}]
clean:
  workers: 1
tokenizer:
  vocab_size: 500
preprocess:
  workers: 1
"""
    if train:
        text += """\
train:
  config: tiny_clm
  ranks: 1
  overrides: [train.steps=4, train.eval_interval=2, train.eval_samples=8, train.log_interval=1, train.save_interval=2,
              optim.warmup_steps=1, "data.split=80,20,0"]
export: {}
"""
    text += "".join(f"{key}: {value}\n" for key, value in extra.items())
    path = folder / "recipe.yaml"
    path.write_text(text)
    return path


def pipeline(recipe: Path, workdir: Path, *args: str, expect: int = 0, timeout: int = 600) -> str:
    proc = subprocess.run([sys.executable, "-m", "pretrain.cli.pipeline", str(recipe), "--workdir", str(workdir),
                           *map(str, args)], cwd=ROOT, env=train_env(), capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == expect, f"exit {proc.returncode}:\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}"
    return proc.stdout + proc.stderr


def ran(output: str) -> list[str]:
    """The stages the pipeline ran, in order."""
    return re.findall(r"^=== (\w+): runs", output, re.MULTILINE)


def state(workdir: Path, stage: str) -> str | None:
    stamp = Stamp.read(workdir / ".pipeline" / f"{stage}.json")
    return stamp.state if stamp else None


def mtimes(folder: Path) -> dict[str, int]:
    return {str(p): p.stat().st_mtime_ns for p in folder.rglob("*") if p.is_file() and ".pipeline" not in p.parts}


@pytest.fixture
def corpus(tmp_path) -> Path:
    return write_jsonl(tmp_path / "corpus.jsonl", grown_documents(count=300, seed=3))


def test_stages_rerun_only_when_stale_and_everything_after_them(tmp_path, corpus):
    recipe, work = write_recipe(tmp_path, corpus), tmp_path / "work"
    out = pipeline(recipe, work, "--until", "tokenizer")
    assert ran(out) == ["clean", "tokenizer"] and not (work / "data").exists()
    out = pipeline(recipe, work)
    assert ran(out) == ["preprocess"], out
    assert "--- clean: up to date" in out and "--- tokenizer: up to date" in out
    assert (work / "data" / "corpus_text_document.bin").exists()
    assert all(state(work, stage) == "complete" for stage in DATA_STAGES)

    before = mtimes(work)
    out = pipeline(recipe, work)
    assert ran(out) == [] and out.count("up to date (completed") == 3
    assert mtimes(work) == before  # nothing was touched

    out = pipeline(recipe, work, "--from", "tokenizer", "--until", "tokenizer", "--dry-run")
    assert "=== tokenizer: would run (--from tokenizer)" in out and "preprocess" not in out.split("--- clean")[1]
    assert mtimes(work) == before

    out = pipeline(recipe, work, "tokenizer.vocab_size=600")
    assert ran(out) == ["tokenizer", "preprocess"], out
    assert "settings changed: tokenizer.vocab_size: 500 -> 600" in out and "(tokenizer runs before it)" in out
    assert json.loads((work / "tokenizer" / "tokenizer.json").read_text())["model"]["vocab"].__len__() == 600
    assert ran(pipeline(recipe, work, "tokenizer.vocab_size=600")) == []
    assert "tokenizer.vocab_size: 600 -> 500" in pipeline(recipe, work, "--dry-run")  # the recipe's value: a change too

    with open(corpus, "a", encoding="utf-8") as handle:  # the input changed: everything runs
        handle.write(json.dumps({"text": grown_documents(count=301, seed=9)[-1]}, ensure_ascii=False) + "\n")
    out = pipeline(recipe, work, "tokenizer.vocab_size=600")
    assert ran(out) == list(DATA_STAGES) and f"input changed: {corpus} changed" in out

    (work / "data" / "corpus_text_document.idx").unlink()  # an output gone: that stage runs again
    out = pipeline(recipe, work, "tokenizer.vocab_size=600")
    assert ran(out) == ["preprocess"] and "output changed" in out and "corpus_text_document.idx is gone" in out


def test_dry_run_prints_each_command_and_touches_nothing(tmp_path, corpus):
    recipe, work = write_recipe(tmp_path, corpus, train=True), tmp_path / "work"
    out = pipeline(recipe, work, "--dry-run", "train.steps=7")
    assert not work.exists()
    assert re.findall(r"^=== (\w+): would run", out, re.MULTILINE) == ["clean", "tokenizer", "preprocess", "train",
                                                                      "export"]
    commands = [line for line in out.splitlines() if line.startswith("$ ")]
    assert [c.split()[1] for c in commands] == ["pretrain-clean", "pretrain-train-tokenizer", "pretrain-preprocess",
                                                "pretrain-train", "pretrain-export"]
    assert f"--input {corpus}" in commands[0] and f"--output {work / 'clean'}" in commands[0]
    assert "--type bpe" in commands[1] and "--vocab-size 500" in commands[1]
    assert "--append-eod" in commands[2] and "--split-sentences" not in commands[2]
    assert "train.steps=7" in commands[3] and f"run.dir={work / 'run'}" in commands[3]
    # a masked LM: WordPiece, sentence datasets, without end-of-text
    out = pipeline(recipe, work, "--dry-run", "train.config=tiny_mlm", "--until", "preprocess")
    commands = [line for line in out.splitlines() if line.startswith("$ ")]
    assert len(commands) == 3 and "--type wordpiece" in commands[1]
    assert "--split-sentences" in commands[2] and "--append-eod" not in commands[2]


def test_failed_stage_is_not_recorded_and_later_stages_do_not_run(tmp_path, corpus):
    with open(corpus, "a", encoding="utf-8") as handle:
        handle.write('{"text": "broken\n')
    recipe, work = write_recipe(tmp_path, corpus), tmp_path / "work"
    out = pipeline(recipe, work, expect=2)
    lines = sum(1 for _ in open(corpus, encoding="utf-8"))
    assert f"{corpus}:{lines}" in out and "clean failed (exit 2)" in out and "Traceback" not in out
    assert state(work, "clean") == "running" and state(work, "tokenizer") is None
    assert not (work / "tokenizer").exists()
    out = pipeline(recipe, work, "input.skip_bad_input=true", "--until", "clean")
    assert ran(out) == ["clean"] and "settings changed: input.skip_bad_input: false -> true" in out


def test_interrupted_stage_publishes_nothing_and_runs_again(tmp_path):
    corpus = write_jsonl(tmp_path / "corpus.jsonl", grown_documents(count=3000, seed=4))
    recipe, work = write_recipe(tmp_path, corpus), tmp_path / "work"
    proc = subprocess.Popen([sys.executable, "-m", "pretrain.cli.pipeline", str(recipe), "--workdir", str(work)],
                            cwd=ROOT, env=train_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 60
    while not list((work / "clean" / ".stage").glob("*.tmp-*")):  # the cleaning command is writing
        assert proc.poll() is None and time.monotonic() < deadline, proc.stdout.read() if proc.poll() is not None else ""
        time.sleep(0.02)
    assert state(work, "clean") == "running"
    proc.send_signal(signal.SIGTERM)
    out = proc.communicate(timeout=120)[0]
    assert proc.returncode == 130, out
    assert "nothing was published" in out
    assert state(work, "clean") == "running" and not list((work / "clean").glob("part-*.jsonl.zst")) \
        and not (work / "clean" / "report.json").exists() and not list((work / "clean").rglob("*.tmp-*"))
    out = pipeline(recipe, work, "--until", "clean")
    assert ran(out) == ["clean"] and "interrupted or failed before it completed" in out
    assert state(work, "clean") == "complete"


def test_an_interrupted_training_saves_and_stops_on_every_rank(tmp_path, corpus):
    """SIGTERM (kill, timeout, a scheduler) to a pipeline training on 2 ranks: the ranks save and stop (exit 75;
    DeepSpeed's runner, signalled, ended and left its ranks training), nothing of the run is left running or
    asking the next launch to stop, and the next run goes on from the checkpoint."""
    recipe, work = write_recipe(tmp_path, corpus, train=True), tmp_path / "work"
    pipeline(recipe, work, "--until", "preprocess")
    run = ["train.ranks=2", "train.steps=100000", "train.save_interval=100000", "train.stop_check_interval=1"]
    log = tmp_path / "pipeline.log"  # not a pipe: ranks left running would hold it open
    with open(log, "w") as handle:
        proc = subprocess.Popen([sys.executable, "-m", "pretrain.cli.pipeline", str(recipe), "--workdir", str(work),
                                 *run, "--until", "train"], cwd=ROOT, env=train_env(), stdout=handle,
                                stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 180
        while logged_step(work / "run") < 2:
            assert proc.poll() is None and time.monotonic() < deadline, log.read_text()[-3000:]
            time.sleep(0.2)
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=180)
    finally:
        proc.kill()
    out = log.read_text()
    left = subprocess.run(["pgrep", "-f", f"run.dir={work / 'run'}"], capture_output=True, text=True).stdout.split()
    for pid in left:  # the defect this guards: ranks still training behind an ended pipeline
        subprocess.run(["kill", "-9", pid])
    assert not left, f"ranks left running: {left}\n{out[-3000:]}"
    assert proc.returncode == 75 and "train stopped (exit 75)" in out and "run the same command again" in out, out[-3000:]
    stopped = json.loads((work / "run" / "summary.json").read_text())["step"]
    assert (work / "run" / "checkpoints" / f"step{stopped:08d}" / "COMPLETE").exists() and stopped < 100000
    assert not (work / "run" / "STOP").exists()
    out = pipeline(recipe, work, *run[:1], f"train.steps={stopped + 1}", "--until", "train")
    assert ran(out) == ["train"] and f"resumed from step{stopped:08d}" in (work / "run" / "logs" / "rank0.log").read_text()
    assert json.loads((work / "run" / "summary.json").read_text())["status"] == "finished"


def test_a_stamp_that_recorded_more_files_than_a_stage_now_lists_is_not_stale(tmp_path):
    """Stamps written when the train stage listed every checkpoint's COMPLETE: a file no longer named by the
    stage's outputs is not looked at (it made a finished run train and export again)."""
    from pretrain.pipeline.stamps import changed, snapshot

    (tmp_path / "summary.json").write_text("{}")
    recorded = {**snapshot([str(tmp_path / "summary.json")]), str(tmp_path / "step1" / "COMPLETE"): [0, 1]}
    assert changed(recorded, [str(tmp_path / "summary.json")]) is None
    assert "is gone" in changed(recorded, [str(tmp_path / "summary.json"), str(tmp_path / "step*" / "COMPLETE")])


def test_a_training_that_completes_before_its_stop_is_recorded_and_nothing_after_it_runs(tmp_path):
    """Ctrl-C while the last steps run (before the next stop check): the run completes (exit 0). It was reported
    as interrupted and left unrecorded; a failure after the stop (exit 1) was reported as an interruption too."""
    from pretrain.pipeline.local import CompletedWhenStopped, _run_training
    from pretrain.pipeline.stages import Command

    def interrupt(signum, frame):
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGALRM, interrupt)
    try:
        for code in (0, 3):
            stop = tmp_path / f"run{code}" / "STOP"
            command = Command([sys.executable, "-c", f"import time, sys; time.sleep(1.5); sys.exit({code})"], [],
                              stop_file=str(stop))
            signal.setitimer(signal.ITIMER_REAL, 0.5)
            if code == 0:
                with pytest.raises(CompletedWhenStopped):
                    _run_training(command, stop)
            else:
                assert _run_training(command, stop) == 3
            assert not stop.exists()  # written at the Ctrl-C, removed once the run ended
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def test_damaged_stamps_missing_inputs_and_stages_still_queued_are_named(tmp_path, corpus):
    from pretrain.pipeline.local import run_stages
    from pretrain.pipeline.status import PipelineError

    recipe, work = write_recipe(tmp_path, corpus), tmp_path / "work"
    out = pipeline(recipe, work, "input.paths=[/nowhere/corpus-*.jsonl]", "--dry-run", expect=2)
    assert "input.paths: /nowhere/corpus-*.jsonl matches no file, and the clean stage reads it" in out
    pipeline(recipe, work, "--until", "clean")
    (work / ".pipeline" / "clean.json").write_text('{"broken')  # a hand edit: not taken as "never ran"
    out = pipeline(recipe, work, "--dry-run", expect=2)
    assert f"{work / '.pipeline' / 'clean.json'} cannot be read" in out and "delete the file" in out
    (work / ".pipeline" / "clean.json").unlink()
    pipeline(recipe, work, "--until", "clean")
    stamp = Stamp.read(work / ".pipeline" / "clean.json")  # as if --slurm had queued it and its jobs still ran
    stamp.state, stamp.jobs = "submitted", ["4242"]
    stamp.write(work / ".pipeline" / "clean.json")
    loaded = load_recipe(str(recipe), [], str(work))
    statuses = decide(plans(loaded), layout_for(loaded), alive=lambda jobs: True)
    assert statuses[0].action == "in flight" and statuses[1].action == "run"
    with pytest.raises(PipelineError, match=r"clean is still running under Slurm \(jobs 4242\)"):
        run_stages(statuses, layout_for(loaded))


def test_a_workdir_in_use_is_refused(tmp_path, corpus):
    import fcntl

    recipe, work = write_recipe(tmp_path, corpus), tmp_path / "work"
    (work / ".pipeline").mkdir(parents=True)
    with open(work / ".pipeline" / "LOCK", "a+") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        held.write("host h, pid 1234\n")
        held.flush()
        out = pipeline(recipe, work, expect=2)
    assert f"{work} is in use by another pretrain-pipeline (host h, pid 1234" in out and ran(out) == []
    assert "would run" in pipeline(recipe, work, "--dry-run")  # dry runs take no lock


def test_without_a_clean_stage_the_tokenizer_and_preprocessing_read_the_input(tmp_path, corpus):
    recipe_file = write_recipe(tmp_path, corpus)
    recipe_file.write_text(recipe_file.read_text().replace("clean:\n  workers: 1\n", ""))
    recipe = load_recipe(str(recipe_file), ["input.json_key=body", "input.text_mode=paragraph"], str(tmp_path / "w"))
    tokenizer, preprocess = plans(recipe)
    for plan in (tokenizer, preprocess):
        command = str(plan.commands[0])
        assert f"--input {corpus} --json-keys body --text-mode paragraph" in command and "part-" not in command
        assert plan.inputs[0] == str(corpus) and plan.settings["input.json_key"] == "body"
    assert preprocess.outputs[0].endswith("data/corpus_body_document.bin")


def test_recipe_errors_name_the_file_and_the_fix(tmp_path, corpus):
    recipe = write_recipe(tmp_path, corpus, train=True)
    work = tmp_path / "work"
    out = pipeline(recipe, work, "clean.langauge=ko", "train.stepz=3", "data.prefixes=[x]", "bogus", expect=2)
    assert str(recipe) in out and "unknown key clean.langauge" in out and "must look like STAGE.key=value" in out
    assert "unknown key train.stepz (did you mean train.steps?" in out and "data.prefixes is set by the pipeline" in out
    out = pipeline(recipe, work, "train.rank=2", expect=2)  # near a key of the stage itself, not the trainer's
    assert "unknown key train.rank; did you mean train.ranks (the train stage's own keys" in out
    # the trainer's own checks, before hours of cleaning: not when the training starts
    out = pipeline(recipe, work, "optim.warmup_steps=500", expect=2)
    assert "train: optim.warmup_steps=500 is longer than train.steps=4" in out and "dataset" not in out
    assert "Traceback" not in out and not work.exists()
    broken = tmp_path / "broken.yaml"
    broken.write_text("input:\n  paths: [a\nclean: {}\n")
    out = pipeline(broken, work, expect=2)
    assert f"{broken}:" in out and "not valid YAML" in out
    no_train = write_recipe(tmp_path, corpus)
    assert "the recipe has no train stage" in pipeline(no_train, work, "train.steps=3", expect=2)
    out = pipeline(no_train, work, "input.paths=/data/ko.jsonl", expect=2)  # a string, not a list: said once
    assert "input.paths='/data/ko.jsonl' is not a list[str]" in out and "input.paths is empty" not in out
    assert "recipe 'nonesuch' not found (shipped recipes: " in pipeline(Path("nonesuch"), work, expect=2)


def test_trainer_keys_go_to_the_trainer_and_stage_keys_to_the_stage(tmp_path, corpus):
    recipe = load_recipe(str(write_recipe(tmp_path, corpus, train=True)),
                         ["train.steps=9", "model.dropout=0.1", "train.ranks=2", "train.config=tiny_mlm"], str(tmp_path))
    train = recipe.stages["train"]
    assert train.ranks == 2 and train.config == "tiny_mlm" and train.overrides[-2:] == ["train.steps=9", "model.dropout=0.1"]
    assert recipe.objective == "mlm" and recipe.trainer_config().train.steps == 9
    # settings that only change how a stage runs do not make it stale
    base = {p.name: p.settings for p in plans(recipe)}
    faster = load_recipe(str(recipe.path), ["train.steps=9", "model.dropout=0.1", "train.ranks=1", "train.config=tiny_mlm",
                                            "clean.workers=2", "preprocess.shards=8"], str(tmp_path))
    assert {p.name: p.settings for p in plans(faster)} == base


@pytest.mark.parametrize("name,stages,tokenizer,level", [
    ("demo", ["clean", "tokenizer", "preprocess", "train", "export"], "bpe", "document"),
    ("kowiki_gpt2", ["clean", "tokenizer", "preprocess", "train", "export"], "bpe", "document"),
    ("ko_bert", ["clean", "tokenizer", "preprocess", "train", "export"], "wordpiece", "sentence"),
    ("dewiki_gpt2", ["clean", "tokenizer", "preprocess", "train", "export"], "bpe", "document"),
    ("ko_llama", ["clean", "tokenizer", "preprocess", "train", "export"], "bpe", "document"),
    ("dewiki_modernbert", ["clean", "tokenizer", "preprocess", "train", "export"], "bpe", "sentence"),
])
def test_shipped_recipes_plan_every_stage(tmp_path, name, stages, tokenizer, level):
    """Every shipped recipe plans its stages, and its trainer config passes the trainer's own checks on the
    recipe's ranks (a batch that splits, a ramp that fits the batch, the family's settings)."""
    from pretrain.config import validate

    recipe = load_recipe(name, workdir=str(tmp_path))
    stage_plans = plans(recipe)
    assert [p.name for p in stage_plans] == stages and layout_for(recipe).level == level
    assert stage_plans[1].settings["tokenizer.type"] == tokenizer
    assert all(p.commands and p.jobs for p in stage_plans)
    validate(recipe.trainer_config(), recipe.stages["train"].ranks, with_data=False)
    assert ("--append-eod" in stage_plans[2].commands[0].argv) == (recipe.objective == "clm")
    if name == "demo":
        assert [Path(p).name for p in recipe.input.paths] == ["*.txt"]
        assert recipe.trainer_config().train.steps == 120


def test_an_eval_stage_is_one_entry(monkeypatch, tmp_path, corpus):
    """A stage added to STAGES (with its recipe section) is planned, ordered, stamped and offered by the CLI
    with nothing else changed: how the coming pretrain-eval joins."""
    from pretrain.cli.pipeline import parser
    from pretrain.pipeline import recipe as recipe_module
    from pretrain.pipeline import stages

    def plan_eval(recipe, layout):
        return stages.StagePlan("eval", {"eval.tasks": "all"}, [str(layout.hf)], [str(layout.workdir / "eval.json")],
                                [stages.Command(["true"], ["pretrain-eval", str(layout.hf)])], [], [])

    monkeypatch.setattr(stages, "STAGES", [*stages.STAGES, stages.Stage("eval", plan_eval, lambda layout: None)])
    monkeypatch.setitem(recipe_module.SECTIONS, "eval", recipe_module.ExportSettings)
    recipe = load_recipe(str(write_recipe(tmp_path, corpus, train=True, eval="{}")), workdir=str(tmp_path / "w"))
    assert [p.name for p in plans(recipe)] == ["clean", "tokenizer", "preprocess", "train", "export", "eval"]
    assert "eval" in next(a.choices for a in parser()._actions if a.dest == "until")
    statuses = decide(plans(recipe), layout_for(recipe))
    assert [s.plan.name for s in statuses][-1] == "eval" and statuses[-1].reason == "clean runs before it"


@pytest.mark.slow
def test_train_and_export_stages_resume_or_set_the_old_run_aside(tmp_path, corpus):
    recipe, work = write_recipe(tmp_path, corpus, train=True), tmp_path / "work"
    out = pipeline(recipe, work)
    assert ran(out) == ["clean", "tokenizer", "preprocess", "train", "export"], out
    assert (work / "hf" / "model.safetensors").exists() and state(work, "export") == "complete"
    assert json.loads((work / "run" / "summary.json").read_text())["step"] == 4

    stamp = Stamp.read(work / ".pipeline" / "train.json")  # as if the run had been interrupted: it resumes
    stamp.state = "running"
    stamp.write(work / ".pipeline" / "train.json")
    out = pipeline(recipe, work)
    assert ran(out) == ["train", "export"] and "the run resumes" in out and "set aside" not in out
    assert "resumed from step00000004" in (work / "run" / "logs" / "rank0.log").read_text()

    # how the run goes (logs, checkpoints kept, when it stops) makes nothing stale; nor does an older
    # checkpoint deleted to free disk, nor the workdir moved (mv keeps the files' times)
    shutil.rmtree(work / "run" / "checkpoints" / "step00000002")
    moved = work.rename(tmp_path / "moved")
    out = pipeline(recipe, moved, "train.log_interval=2", "train.keep_last=1", "train.exit_minutes=600")
    assert ran(out) == [] and "train: up to date" in out and "export: up to date" in out, out
    work = moved.rename(work)

    out = pipeline(recipe, work, "train.steps=6")  # more steps: the run goes on from its newest checkpoint
    assert ran(out) == ["train", "export"] and "train.steps: 4 -> 6" in out and "goes on from its newest" in out
    log = (work / "run" / "logs" / "rank0.log").read_text()
    assert not list(work.glob("run.replaced-*")) and "resumed from step00000004" in log
    assert "the learning rate at step 4 goes from" in log and "a decay already done rises again" in log
    assert json.loads((work / "run" / "summary.json").read_text())["step"] == 6

    out = pipeline(recipe, work, "train.steps=5")  # fewer steps than it has: a new run (resuming could not go back)
    assert ran(out) == ["train", "export"] and "train.steps: 6 -> 5" in out and "set aside" in out
    shutil.rmtree(work / "run")
    next(work.glob("run.replaced-*")).rename(work / "run")
    out = pipeline(recipe, work, "train.steps=6", "optim.lr=1e-3")  # what it trains: a new run, the old one aside
    assert ran(out) == ["train", "export"] and "optim.lr: 0.003 -> 0.001" in out
    aside = list(work.glob("run.replaced-*"))
    assert len(aside) == 1 and json.loads((aside[0] / "summary.json").read_text())["step"] == 6
    assert json.loads((work / "run" / "summary.json").read_text())["step"] == 6
    assert "resumed" not in (work / "run" / "logs" / "rank0.log").read_text()
    assert json.loads((work / "hf" / "pretrain_export.json").read_text())["checkpoint"].endswith("step00000006")


@pytest.mark.slow
def test_demo_through_the_pipeline_holds_the_readme_claim(tmp_path):
    """The README: "trains a tiny GPT-2 ... until the valid loss has clearly dropped (about 6.9 to 5.9 in 120
    steps)". Run as scripts/demo.sh runs it (after its set-up): the pipeline's demo recipe, 2 CPU ranks."""
    env = {**train_env(), "PYTHONWARNINGS": "ignore"}
    proc = subprocess.run([sys.executable, "-m", "pretrain.demo", "--out", str(tmp_path / "demo")], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=900)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-4000:]
    found = re.search(r"valid loss: ([\d.]+) before training -> ([\d.]+) after (\d+) steps", out)
    assert found, out[-3000:]
    before, after, steps = float(found[1]), float(found[2]), int(found[3])
    assert steps == 120 and 6.8 <= before <= 7.0 and 5.8 <= after <= 6.0, found[0]
    readme = (ROOT / "README.md").read_text()
    assert "about 6.9 to 5.9 in 120 steps" in readme
    assert "=== train: runs" in out and "=== export: runs" in out and "3. generated: '봄이 오면" in out
    assert (tmp_path / "demo" / "run" / "plots" / "loss.png").exists()
    again = subprocess.run([sys.executable, "-m", "pretrain.cli.pipeline", "demo", "--workdir", str(tmp_path / "demo")],
                           cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0 and again.stdout.count("up to date (completed") == 5, again.stdout


@pytest.mark.slow
@pytest.mark.parametrize("arch", ["llama", "modernbert"])
def test_the_readmes_demo_of_the_new_families_trains_exports_and_uses_the_model(tmp_path, arch):
    """``scripts/demo.sh --arch llama`` (document-masked decoder: generates) and ``--arch modernbert`` (encoder
    on WordPiece: fills in masked words), as the README offers them: the loss drops, the export is used."""
    env = {**train_env(), "PYTHONWARNINGS": "ignore"}
    proc = subprocess.run([sys.executable, "-m", "pretrain.demo", "--arch", arch, "--out", str(tmp_path / "demo")],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-4000:]
    found = re.search(r"valid loss: ([\d.]+) before training -> ([\d.]+) after (\d+) steps", out)
    assert found and float(found[2]) < float(found[1]) - 0.3, out[-3000:]
    used = "3. generated: '봄이 오면" if arch == "llama" else "[MASK]가 많이 옵니다.': top guesses ["
    assert used in out and "=== export: runs" in out, out[-3000:]
    log = (tmp_path / "demo" / "run" / "logs" / "rank0.log").read_text()
    assert "document mask:" in log and json.loads((tmp_path / "demo" / "hf" / "config.json").read_text())[
        "architectures"] == ["LlamaForCausalLM" if arch == "llama" else "ModernBertForMaskedLM"]


def test_the_demos_architectures_train_what_they_say():
    """``--arch``: each names a shipped config of that family, decoders causal, encoders masked."""
    from pretrain.config import load_config
    from pretrain.demo.__main__ import ARCHITECTURES, objective_of
    from pretrain.presets import get_preset

    for arch, (config, _) in ARCHITECTURES.items():
        preset = get_preset(load_config(config).model.preset)
        assert preset.family == arch and objective_of(arch) == ("clm" if arch in ("gpt2", "llama") else "mlm")
