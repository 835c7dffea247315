"""Configuration: every shipped config and preset, overrides, YAML round trips, and start-up failures
that must say what is wrong before any process group starts."""

from __future__ import annotations

import sys

import pytest

from pretrain.config import SHIPPED_CONFIGS, Config, ConfigError, load_config, validate
from pretrain.presets import PRESETS, PUBLISHED_VOCAB
from tests.conftest import ROOT
from tests.distributed import launch, preprocess


@pytest.fixture(scope="module")
def data(tmp_path_factory, small_corpus, tokenizer_dir):
    out = tmp_path_factory.mktemp("cfgdata")
    preprocess(small_corpus, tokenizer_dir, out / "d", "--append-eod")
    preprocess(small_corpus, tokenizer_dir, out / "d", "--split-sentences")
    return {"tokenizer": str(tokenizer_dir), "clm": str(out / "d_text_document"), "mlm": str(out / "d_text_sentence"),
            "dir": out}


@pytest.mark.parametrize("path", sorted(SHIPPED_CONFIGS.glob("*.yaml")), ids=lambda p: p.stem)
def test_every_shipped_config_validates_round_trips_and_plans(path, data, tmp_path):
    """Each shipped config: valid with data of its objective, the same after a YAML round trip, and with a
    parallel plan that fits the hardware it is written for (8 x 80 GB GPUs; the tiny ones: 2 CPU ranks)."""
    from pretrain.parallel import choose_plan, request_from_config
    from pretrain.planner import GIB
    from pretrain.presets import get_preset

    config = load_config(str(path))
    objective = get_preset(config.model.preset).objective
    config = load_config(str(path), [f"data.tokenizer={data['tokenizer']}", f"data.prefixes=[{data[objective]}]"])
    tiny = config.model.preset.startswith("tiny")
    world = 2 if tiny else 8
    validate(config, world)
    assert load_config(None, []) == Config()
    (tmp_path / "config.yaml").write_text(config.to_yaml())
    assert load_config(str(tmp_path / "config.yaml")) == config
    chosen = choose_plan(request_from_config(config, PUBLISHED_VOCAB[get_preset(config.model.preset).family],
                                             world, world, (1 if tiny else 80) * GIB))
    assert chosen.fits and chosen.micro_batch * chosen.accumulation * world == config.train.global_batch
    if config.train.ds_config == "auto" and config.model.activation_checkpointing == "auto":
        assert chosen.zero_stage < 3 and chosen.recompute != "full", chosen.summary()  # fits: no ZeRO-3, no full recompute


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_presets_have_the_published_parameter_counts(name):
    from pretrain.planner import count_parameters

    preset = PRESETS[name]
    count, _ = count_parameters(name, PUBLISHED_VOCAB[preset.family])  # tied embeddings counted once
    if preset.published_params:
        padded = 64 - PUBLISHED_VOCAB[preset.family] % 64  # the embedding rounds up to a multiple of 64 rows
        exact = count - padded * preset.hidden
        assert abs(exact - preset.published_params) / preset.published_params < 0.02, exact
    else:
        body = count - (PUBLISHED_VOCAB[preset.family] + 64) // 64 * 64 * preset.hidden  # without the token embedding
        assert preset.name.startswith("tiny") and 0 < body < 200_000, body
    if name == "gpt2-small":
        assert count - 47 * 768 == 124_439_808  # exactly GPT-2's, once the 47 padding rows are taken off


def test_overrides_types_and_every_problem_at_once():
    config = load_config("tiny_clm", ["train.steps=7", "data.prefixes=[a, b]", "optim.lr=1e-3", "train.micro_batch=2",
                                      "model.activation_checkpointing=true", "model.compile=false"])
    assert config.train.steps == 7 and config.data.prefixes == ["a", "b"] and config.optim.lr == 1e-3
    assert config.train.micro_batch == 2 and config.model.activation_checkpointing == "full"
    assert config.model.compile is False and load_config("tiny_clm").train.micro_batch == "auto"
    with pytest.raises(ConfigError) as err:
        load_config("tiny_clm", ["train.stepz=1", "model.dropout=high", "nosection.x=1", "bad",
                                 "model.lm_head=fast", "train.micro_batch=some"])
    text = str(err.value)
    assert "train.stepz" in text and "model.dropout='high'" in text and "nosection" in text and "'bad'" in text
    assert "model.lm_head='fast' is not a 'auto' or 'liger' or 'chunked' or 'plain'" in text
    assert "train.micro_batch='some' is not a 'auto' or int" in text


def test_validation_reports_batch_arithmetic_missing_data_and_ds_config(tmp_path, data):
    (tmp_path / "ds.json").write_text('{"train_batch_size": 64, "bf16": {"enabled": true}, "zero_optimization": {"stage": 3}}')
    config = load_config("tiny_clm", [f"data.tokenizer={data['tokenizer']}", "data.prefixes=[/nope/missing]",
                                      "train.global_batch=10", "train.micro_batch=4", f"train.ds_config={tmp_path}/ds.json",
                                      "model.checkpoint_layers=9", "model.activation_checkpointing=full"])
    with pytest.raises(ConfigError) as err:
        validate(config, world_size=2)
    problems = err.value.problems
    assert any("train.global_batch=10 is not a multiple of" in p and "4 x 2 = 8" in p for p in problems)
    assert any("/nope/missing is missing" in p for p in problems)
    assert any("sets train_batch_size=64" in p for p in problems)
    assert any("sets bf16.enabled=True" in p and "train.precision" in p for p in problems)
    assert any("model.checkpoint_layers=9 needs model.activation_checkpointing=selective" in p for p in problems)
    assert any("between 1 and tiny-gpt2's 2 layers" in p for p in problems)
    renamed = load_config("tiny_clm", [f"data.tokenizer={data['tokenizer']}", f"data.prefixes=[{data['clm']}]",
                                       "train.ds_config=zero3_bf16", "train.global_batch=15"])
    with pytest.raises(ConfigError) as err:
        validate(renamed, world_size=2)
    assert any("was renamed: use zero3" in p for p in err.value.problems)
    assert any("not a multiple of the data-parallel size 2" in p for p in err.value.problems)


def run_train(*args: str):
    import subprocess

    from tests.distributed import train_env

    return subprocess.run([sys.executable, "tools/train.py", *args], cwd=ROOT, env=train_env(),
                          capture_output=True, text=True, timeout=300)


def test_start_fails_clearly_on_bad_batch_missing_data_and_wrong_tokenizer(tmp_path, data, small_corpus):
    bad_batch = run_train("--config", "tiny_clm", f"data.tokenizer={data['tokenizer']}",
                          f"data.prefixes=[{data['clm']}]", "train.global_batch=6", "train.micro_batch=4",
                          f"run.dir={tmp_path}/a")
    assert bad_batch.returncode == 2 and "train.global_batch=6 is not a multiple" in bad_batch.stderr
    missing = run_train("--config", "tiny_clm", f"data.tokenizer={data['tokenizer']}", "data.prefixes=[/no/data]",
                        f"run.dir={tmp_path}/b")
    assert missing.returncode == 2 and "dataset /no/data is missing" in missing.stderr
    from tests.conftest import run_tool

    run_tool("train_tokenizer", "--input", small_corpus, "--output", tmp_path / "small_tok", "--vocab-size", "500")
    mismatch = run_train("--config", "tiny_clm", f"data.tokenizer={tmp_path}/small_tok", f"data.prefixes=[{data['clm']}]",
                         f"run.dir={tmp_path}/c")
    assert mismatch.returncode == 2 and "preprocessed with another tokenizer" in mismatch.stderr
    no_eod = tmp_path / "noeod"
    preprocess(small_corpus, data["tokenizer"], no_eod)
    eod = run_train("--config", "tiny_clm", f"data.tokenizer={data['tokenizer']}", f"data.prefixes=[{no_eod}_text_document]",
                    f"run.dir={tmp_path}/d")
    assert eod.returncode == 2 and "--append-eod" in eod.stderr
    too_small = run_train("--config", "tiny_clm", f"data.tokenizer={data['tokenizer']}", f"data.prefixes=[{data['clm']}]",
                          "train.device_memory_gib=0.0001", f"run.dir={tmp_path}/e")
    assert too_small.returncode == 2 and "no parallel plan fits" in too_small.stderr
    for proc in (bad_batch, missing, mismatch, eod, too_small):
        assert "Traceback" not in proc.stderr


def test_non_finite_loss_stops_with_a_clear_message(tmp_path, data):
    proc = launch(1, "tiny_clm", tmp_path / "run", f"data.tokenizer={data['tokenizer']}", f"data.prefixes=[{data['clm']}]",
                  "optim.lr=1e30", "optim.min_lr=1e29", "optim.warmup_steps=1", "train.max_nonfinite_steps=2",
                  "train.steps=20", "train.log_interval=1", check=False)
    assert proc.returncode == 1, proc.stderr[-2000:]
    assert "not finite for 2 steps in a row" in proc.stderr and "Lower optim.lr" in proc.stderr
    assert not (tmp_path / "run" / "checkpoints" / "latest").exists()
