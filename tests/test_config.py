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
    tiny = "tiny" in config.model.preset
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


# The released checkpoints' exact parameter counts at their own vocabularies (GPT-2: 50,257; BERT: 30,522).
# GPT-2: GPT2LMHeadModel, the LM head tied to the embedding. BERT: the published BertModel (with its pooler) of
# bert-base-uncased / bert-large-uncased; the papers round them to 110M and 340M.
# Llama-style: SmolLM-135M / -360M (MobileLLM's shapes, tied, vocabulary 49,152) and TinyLlama-1.1B (untied, 32,000).
# ModernBERT: the released ModernBertForMaskedLM checkpoints (vocabulary 50,368, a multiple of 64); the paper's
# 149M and 395M are the encoder without the MLM head (149,014,272 and 394,781,696).
EXACT_PARAMS = {"gpt2-small": 124_439_808, "gpt2-medium": 354_823_168, "gpt2-large": 774_030_080,
                "gpt2-xl": 1_557_611_200, "bert-base": 109_482_240, "bert-large": 335_141_888,
                "llama-125m": 134_515_008, "llama-350m": 361_821_120, "llama-1b": 1_100_048_384,
                "modernbert-base": 149_655_232, "modernbert-large": 395_881_664}


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_presets_have_the_published_parameter_counts(name):
    from pretrain.planner import count_parameters

    preset = PRESETS[name]
    vocab = preset.published_vocab
    count, _ = count_parameters(name, vocab)  # tied embeddings counted once
    padding = -vocab % 64  # the embedding rounds up to a multiple of 64 rows (and the MLM output bias with it)
    exact = count - padding * preset.hidden * (1 if preset.tie_embeddings else 2) - (padding if preset.family == "bert" else 0)
    if name in EXACT_PARAMS:
        want = EXACT_PARAMS[name]
        if preset.family == "bert":  # a masked LM: no pooler (h^2 + h) but the MLM transform (h^2 + h), its
            want += 2 * preset.hidden + vocab  # LayerNorm (2h) and the output bias (one per token)
        assert exact == want, f"{exact:,} parameters, the released model has {want:,}"
        assert abs(exact - preset.published_params) / preset.published_params < 0.015  # the rounded figure quoted
    else:
        body = count - (vocab + 63) // 64 * 64 * preset.hidden  # without the token embedding
        assert "tiny" in preset.name and 0 < body < 200_000, body


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
    assert "unknown key train.stepz (did you mean train.steps?" in text


def test_a_key_named_as_other_tools_name_it_gets_this_projects_name():
    """Megatron-LM's, Hugging Face's and torchtitan's names (optim.schedule, train.max_steps, data.seq_length, ...)
    are answered with the key that does it here; every answer is a key that exists."""
    import dataclasses
    import typing

    from pretrain.config.loading import NAMES_ELSEWHERE
    from pretrain.config.schema import Config

    sections = {name: {f.name for f in dataclasses.fields(cls)} for name, cls in typing.get_type_hints(Config).items()}
    for theirs, ours in NAMES_ELSEWHERE.items():
        section, key = theirs.split(".")
        assert ours in sections[section] and key not in sections[section], theirs
    with pytest.raises(ConfigError) as err:
        load_config("tiny_clm", ["optim.schedule=wsd", "train.max_steps=9", "data.seq_length=64"])
    text = str(err.value)
    for wanted in ("optim.schedule (did you mean optim.decay?", "train.max_steps (did you mean train.steps?",
                   "data.seq_length (did you mean data.seq_len?"):
        assert wanted in text, text
    from pretrain.config.loading import build_section
    from pretrain.pipeline.recipe import TrainSettings

    problems: list[str] = []  # a pipeline recipe's train section shares the name, not the keys: no such hint there
    build_section(TrainSettings, {"max_steps": 9}, "train", problems)
    assert problems and "did you mean" not in problems[0], problems


def test_validation_reports_batch_arithmetic_missing_data_and_ds_config(tmp_path, data):
    (tmp_path / "ds.json").write_text('{"train_batch_size": 64, "bf16": {"enabled": true}, "zero_optimization": {"stage": 3}, '
                                      '"managed_gradient_accumulation": false}')
    config = load_config("tiny_clm", [f"data.tokenizer={data['tokenizer']}",
                                      "data.prefixes=[0.5 /nope/missing, 0.3 /nope/other, 0.2 /nope/../nope/missing]",
                                      "train.global_batch=10", "train.micro_batch=4", f"train.ds_config={tmp_path}/ds.json",
                                      "model.checkpoint_layers=9", "model.activation_checkpointing=full",
                                      "run.plot_interval_minutes=-1", "optim.lr=0", "optim.min_lr=0"])
    with pytest.raises(ConfigError) as err:
        validate(config, world_size=2)
    problems = err.value.problems
    assert "run.plot_interval_minutes=-1.0 must be 0 or more" in problems
    assert "optim.lr=0.0 must be positive" in problems  # the schedule divides by it
    assert any("train.global_batch=10 is not a multiple of" in p and "4 x 2 = 8" in p for p in problems)
    assert any("/nope/missing is missing" in p for p in problems)
    assert [p for p in problems if "twice" in p] == [  # the same dataset twice would serve each sample twice in a row
        "data.prefixes lists the dataset /nope/../nope/missing twice (also as /nope/missing): both copies would serve "
        "the same samples in the same order, each one twice in a row; list it once and raise its weight to draw more "
        "of it (its epochs repeat, each shuffled anew)"]
    assert any("sets train_batch_size=64" in p for p in problems)
    assert any("sets bf16.enabled=True" in p and "train.precision" in p for p in problems)
    assert any("sets managed_gradient_accumulation=False" in p for p in problems)
    assert any("model.checkpoint_layers=9 needs model.activation_checkpointing=selective" in p for p in problems)
    assert any("between 1 and tiny-gpt2's 2 layers" in p for p in problems)
    renamed = load_config("tiny_clm", [f"data.tokenizer={data['tokenizer']}", f"data.prefixes=[{data['clm']}]",
                                       "train.ds_config=zero3_bf16", "train.global_batch=15"])
    with pytest.raises(ConfigError) as err:
        validate(renamed, world_size=2)
    assert any("was renamed: use zero3" in p for p in err.value.problems)
    assert any("not a multiple of the data-parallel size 2" in p for p in err.value.problems)


@pytest.mark.parametrize("optimizer", ["lamb", "stable_adamw"])
def test_optimizers_that_need_whole_tensors_get_zero_stage_0(optimizer):
    """LAMB's per-layer trust ratio and StableAdamW's per-tensor update clipping need each parameter whole: ZeRO
    stages that flatten and partition them are refused, and the parallel plan picks stage 0."""
    from pretrain.parallel import choose_plan, request_from_config

    partitioned = load_config("tiny_mlm", [f"optim.optimizer={optimizer}", "train.ds_config=zero2"])
    with pytest.raises(ConfigError, match=f"optim.optimizer={optimizer} needs whole, unpartitioned parameters"):
        validate(partitioned, world_size=2, with_data=False)
    auto = load_config("tiny_mlm", [f"optim.optimizer={optimizer}"])
    validate(auto, world_size=2, with_data=False)
    request = request_from_config(auto, 1024, 2, 2, 80 << 30)
    assert request.whole_stage_only == (0,) and choose_plan(request).zero_stage == 0
    assert request_from_config(load_config("tiny_mlm"), 1024, 2, 2, 80 << 30).whole_stage_only is None
    with pytest.raises(ConfigError, match="must be adamw, lamb or stable_adamw"):
        validate(load_config("tiny_mlm", ["optim.optimizer=adam"]), world_size=2, with_data=False)


def test_wandb_without_the_package_is_a_config_problem(data, monkeypatch):
    """run.wandb set where wandb is not installed: reported with the other problems, before anything starts."""
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "wandb" else real(name, *a))
    config = load_config("tiny_clm", [f"data.tokenizer={data['tokenizer']}", f"data.prefixes=[{data['clm']}]",
                                      "run.wandb=my-project", "train.global_batch=15"])
    with pytest.raises(ConfigError) as err:
        validate(config, world_size=2)
    assert any("run.wandb='my-project' needs the wandb package: pip install wandb" in p for p in err.value.problems)
    assert any("not a multiple of the data-parallel size 2" in p for p in err.value.problems)

def test_family_keys_defaults_and_misuse(data):
    """data.document_mask takes the family's default (Llama and ModernBERT on, GPT-2 and BERT off), written into
    the config; keys a
    family does not take are reported with the family named."""
    assert load_config("tiny_llama").data.document_mask is True
    assert load_config("tiny_clm").data.document_mask is False and Config().data.document_mask is False
    assert load_config("tiny_clm", ["model.preset=llama-125m"]).data.document_mask is True
    assert load_config("tiny_clm", ["data.document_mask=true"]).data.document_mask is True
    assert load_config("tiny_llama", ["data.document_mask=false"]).data.document_mask is False
    assert load_config("tiny_mlm").data.document_mask is False
    assert load_config("modernbert_tiny").data.document_mask is True
    assert load_config("tiny_mlm", ["model.preset=modernbert-tiny"]).data.document_mask is True
    common = [f"data.tokenizer={data['tokenizer']}", f"data.prefixes=[{data['clm']}]"]
    validate(load_config("tiny_llama", [*common, "model.rope_theta=500000", "model.tie_embeddings=false"]), 2)
    with pytest.raises(ConfigError) as err:
        validate(load_config("tiny_clm", [*common, "model.rope_theta=500000", "model.tie_embeddings=false"]), 2)
    assert any("model.rope_theta applies to rotary positions; tiny-gpt2 (gpt2)" in p for p in err.value.problems)
    assert any("model.tie_embeddings=false: tiny-gpt2 (gpt2) always ties" in p for p in err.value.problems)
    with pytest.raises(ConfigError) as err:
        validate(load_config("tiny_mlm", [*common, "data.document_mask=true"]), 2)
    assert any("data.document_mask packs documents; tiny-bert (bert) trains on sentence pairs" in p
               for p in err.value.problems)
    with pytest.raises(ConfigError) as err:
        validate(load_config("tiny_llama", [*common, "model.block=own", "model.rope_theta=-1"]), 2)
    assert any("model.block=own is this project's GPT-2 block; llama-tiny (llama)" in p for p in err.value.problems)
    assert any("model.rope_theta=-1.0 must be positive" in p for p in err.value.problems)


def run_train(*args: str):
    import subprocess

    from tests.distributed import train_env

    return subprocess.run([sys.executable, "tools/train.py", *args], cwd=ROOT, env=train_env(),
                          capture_output=True, text=True, timeout=300)


def test_model_init_from_is_checked_with_the_rest_before_any_rank_starts(tmp_path):
    """A folder that is missing, holds no config.json or a model of another family is named in the same list as
    the config's other problems (exit 2, no traceback), not by transformers once the ranks have started."""
    from transformers import LlamaConfig

    llama, empty = tmp_path / "llama", tmp_path / "empty"
    LlamaConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                num_key_value_heads=2, vocab_size=1000).save_pretrained(llama)
    empty.mkdir()
    cases = {"/nonexistent/release": "model.init_from=/nonexistent/release does not exist",
             str(empty): f"model.init_from={empty} holds no config.json",
             str(llama): f"model.init_from={llama} is a llama model, but model.preset=modernbert-tiny asks for the "
                         "modernbert family"}
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "config.json").write_text('{"model_type": "llama",')
    cases[str(broken)] = f"model.init_from={broken}: its config.json cannot be read"
    for folder, message in cases.items():
        proc = run_train("--config", "modernbert_tiny", f"model.init_from={folder}", "train.steps=2",
                         "optim.warmup_steps=10", f"run.dir={tmp_path}/run")
        assert proc.returncode == 2 and f"  - {message}" in proc.stderr, proc.stderr[-2000:]
        assert "optim.warmup_steps=10 is longer than train.steps=2" in proc.stderr and "Traceback" not in proc.stderr
    typo = run_train("--config", "tiny_llama", "model.preset=llama-tinyy", f"model.init_from={llama}",
                     f"run.dir={tmp_path}/run")  # the unknown preset named once, by validation
    assert typo.returncode == 2 and "model.preset='llama-tinyy' is unknown" in typo.stderr, typo.stderr[-2000:]
    assert "Traceback" not in typo.stderr


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


def test_a_misspelled_preset_and_the_planners_config_problems_are_messages(tmp_path, data):
    """A preset that does not exist, and any problem the planner's config has, exit 2 with the problem named
    (the planner checks everything but the data it does not need, as the trainer does)."""
    from tests.conftest import run_tool

    train = run_train("--config", "tiny_clm", f"data.tokenizer={data['tokenizer']}", f"data.prefixes=[{data['clm']}]",
                      "model.preset=tiny-gtp2", f"run.dir={tmp_path}/a")
    assert train.returncode == 2 and "model.preset='tiny-gtp2' is unknown" in train.stderr
    preset = run_tool("plan", "--preset", "gpt2-smal", check=False)
    assert preset.returncode == 2 and "model.preset='gpt2-smal' is unknown" in preset.stderr
    config = run_tool("plan", "--config", "gpt2-xl", check=False)
    assert config.returncode == 2 and "config 'gpt2-xl' not found" in config.stderr
    batch = run_tool("plan", "--config", "tiny_clm", "--global-batch", "7", "--gpus-per-node", "2", check=False)
    assert batch.returncode == 2 and "train.global_batch=7 is not a multiple of the data-parallel size 2" in batch.stderr
    for proc in (train, preset, config, batch):
        assert "Traceback" not in proc.stderr


def test_non_finite_loss_stops_with_a_clear_message(tmp_path, data):
    proc = launch(1, "tiny_clm", tmp_path / "run", f"data.tokenizer={data['tokenizer']}", f"data.prefixes=[{data['clm']}]",
                  "optim.lr=1e30", "optim.min_lr=1e29", "optim.warmup_steps=1", "train.max_nonfinite_steps=2",
                  "train.steps=20", "train.log_interval=1", check=False)
    assert proc.returncode == 1, proc.stderr[-2000:]
    assert "not finite for 2 steps in a row" in proc.stderr and "Lower optim.lr" in proc.stderr
    assert not (tmp_path / "run" / "checkpoints" / "latest").exists()
    assert (tmp_path / "run" / "plots" / "loss.png").exists()  # the curve that diverged, drawn before the exit
