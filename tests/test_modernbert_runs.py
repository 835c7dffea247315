"""Real ModernBERT runs on CPU (slow): one rank with StableAdamW that resumes exactly and exports a
ModernBertForMaskedLM with the trainer's logits; and two ranks under ZeRO-3 (AdamW: StableAdamW works on whole
tensors) with every block recomputing, whose curve equals the run without ZeRO and which resumes on one rank
through the universal checkpoint."""

from __future__ import annotations

import json
import shutil

import pytest
import torch

from pretrain.checkpoint import tag_for
from tests.distributed import assert_run_records, launch, metrics, partition_sizes, preprocess
from tests.test_modernbert import trainer_logits

STEPS, STOP = 6, 3
RUN = (f"train.steps={STEPS}", "train.log_interval=1", f"train.eval_interval={STOP}", f"train.save_interval={STOP}",
       "optim.warmup_steps=2", "train.eval_samples=16", "data.split=80,20,0", "train.stop_check_interval=1",
       "train.global_batch=8", "model.rope_theta=20000")


@pytest.fixture(scope="module")
def sentences(tmp_path_factory, small_corpus, tokenizer_dir):
    """The test corpus tokenized one sentence a document: data overrides for a run."""
    root = tmp_path_factory.mktemp("modernbert_data")
    preprocess(small_corpus, tokenizer_dir, root / "data", "--split-sentences")
    return f"data.tokenizer={tokenizer_dir}", f"data.prefixes=[{root / 'data_text_sentence'}]"


@pytest.fixture(scope="module")
def modernbert_runs(tmp_path_factory, sentences):
    """A 1-rank run of modernbert_tiny on packed documents, unpadded, with StableAdamW (checkpoints at steps 3
    and 6), and a copy of it resumed from step 3 (run.resume_from), its records after step 3 removed first: two
    launches instead of three."""
    root = tmp_path_factory.mktemp("modernbert")
    data = (*sentences, *RUN, "optim.optimizer=stable_adamw", "optim.grad_clip=0")  # ModernBERT's: no clipping
    full, resumed = root / "full", root / "resumed"
    out = {"full": launch(1, "modernbert_tiny", full, *data), "dirs": {"full": full, "resumed": resumed}}
    shutil.copytree(full, resumed, ignore=shutil.ignore_patterns("tensorboard", "plots"))
    records = (resumed / "metrics.jsonl").read_text().splitlines()
    (resumed / "metrics.jsonl").write_text("".join(line + "\n" for line in records if json.loads(line)["step"] <= STOP))
    out["resumed"] = launch(1, "modernbert_tiny", resumed, *data, f"run.resume_from={tag_for(STOP)}")
    return out


@pytest.mark.slow
def test_modernbert_run_resumes_exactly(modernbert_runs):
    full, full_evals = metrics(modernbert_runs["dirs"]["full"])
    resumed, resumed_evals = metrics(modernbert_runs["dirs"]["resumed"])
    assert f"resuming from {tag_for(STOP)}" in modernbert_runs["resumed"].stderr
    assert "optimizer StableAdamW" in modernbert_runs["full"].stderr
    assert sorted(full) == sorted(resumed) == list(range(1, STEPS + 1))
    for step in range(STOP + 1, STEPS + 1):
        assert resumed[step] == pytest.approx(full[step], rel=1e-5, abs=1e-6), step
    assert resumed_evals[-1]["eval_loss"] == pytest.approx(full_evals[-1]["eval_loss"], rel=1e-5)
    assert full[STEPS] < full[1] and full_evals[-1]["eval_loss"] < full_evals[0]["eval_loss"]
    config = (modernbert_runs["dirs"]["full"] / "config.yaml").read_text()
    assert "mask_prob: 0.3" in config and "rope_theta: 20000.0" in config and "document_mask: true" in config
    assert_run_records(modernbert_runs["dirs"]["full"], modernbert_runs["dirs"]["resumed"], 1, STEPS)


@pytest.mark.slow
def test_zero3_with_full_recompute_gives_the_same_losses_and_resumes_on_one_rank(tmp_path, sentences):
    """Two ranks under ZeRO-3 (real partitions; each block gathered at once) with every block recomputing give
    the curve of two ranks without ZeRO, rel 1e-4. Stopped at step 3, the checkpoint, converted to the
    universal format, resumes on one rank (twice the accumulation, the same micro batches) to the same losses:
    without the trainer's repair of DeepSpeed's universal load (per-group step tensors, weight decay), step 6
    is off by 2e-4."""
    data = (*sentences, *RUN, "optim.optimizer=adamw")
    plain, zero3 = tmp_path / "plain", tmp_path / "zero3"
    launch(2, "modernbert_tiny", plain, *data)
    zero3_overrides = (*data, "train.ds_config=zero3", "model.activation_checkpointing=full")
    first = launch(2, "modernbert_tiny", zero3, *zero3_overrides, f"train.exit_interval={STOP}", expect=75)
    sizes = partition_sizes(zero3)  # before the 1-rank launch, which holds everything
    launch(1, "modernbert_tiny", zero3, *zero3_overrides)

    reference, _ = metrics(plain)
    losses, evals = metrics(zero3)
    assert sorted(losses) == sorted(reference) == list(range(1, STEPS + 1)) and len(evals) >= 2
    for step in range(1, STEPS + 1):
        assert losses[step] == pytest.approx(reference[step], rel=1e-4, abs=1e-6), step
    assert (zero3 / "checkpoints" / f"{tag_for(STOP)}_universal").exists()
    assert set(sizes) == {0, 1} and all(held <= total // 2 + 1000 for held, total in sizes.values())
    log = first.stderr
    assert "ZeRO-3 gathers each of the 3 transformer blocks' parameters at once" in log
    assert "recompute full:" in log and "activation checkpointing: 3 of 3 transformer blocks recompute" in log


@pytest.mark.slow
def test_modernbert_export_gives_the_trainers_logits(modernbert_runs, tmp_path):
    """pretrain-export writes a ModernBertForMaskedLM folder (safetensors, tokenizer, no generation config) whose
    fp32 logits equal the trainer's model's, loaded from the same checkpoint, within 1e-4, on a padded batch
    longer than a local layer's reach. Its tokenizer (the run's byte-level BPE) wraps each text in [CLS] ... [SEP],
    as training wrapped each document."""
    from transformers import AutoModelForMaskedLM, AutoTokenizer, ModernBertForMaskedLM

    from pretrain.tokenization import load_tokenizer
    from tests.conftest import run_tool
    from tests.distributed import trained_model

    run_dir = modernbert_runs["dirs"]["full"]
    run_tool("export_hf", run_dir, tmp_path / "hf")
    files = {p.name for p in (tmp_path / "hf").iterdir()}
    assert {"model.safetensors", "config.json", "tokenizer.json"} <= files and "generation_config.json" not in files
    exported = AutoModelForMaskedLM.from_pretrained(tmp_path / "hf", dtype=torch.float32).eval()
    assert isinstance(exported, ModernBertForMaskedLM)
    assert exported.config.rope_parameters["full_attention"]["rope_theta"] == 20000.0

    trained = trained_model(run_dir, STEPS)
    text = ["안녕하세요. " * 20 + "Guten Tag, wie geht es?", "Guten Tag."]
    inputs = AutoTokenizer.from_pretrained(tmp_path / "hf")(text, return_tensors="pt", padding=True)
    assert inputs.input_ids.shape[1] > 129 and not bool(inputs.attention_mask.all())
    specials = load_tokenizer(run_dir / "tokenizer").specials
    assert inputs.input_ids[:, 0].tolist() == [specials.cls] * 2 and "token_type_ids" not in inputs  # it has none
    tokenizer = AutoTokenizer.from_pretrained(tmp_path / "hf")
    assert tokenizer.model_max_length == exported.config.max_position_embeddings
    assert (tokenizer.bos_token_id, tokenizer.eos_token_id) == (exported.config.bos_token_id, exported.config.eos_token_id)
    assert [row[mask.bool()][-1].item() for row, mask in zip(inputs.input_ids, inputs.attention_mask)] == [specials.sep] * 2
    real = inputs.attention_mask.bool()
    with torch.no_grad():
        want = trainer_logits(trained, inputs.input_ids, inputs.attention_mask)
        got = exported(**inputs).logits
    assert (got[real] - want[real]).abs().max().item() <= 1e-4
    shutil.rmtree(tmp_path / "hf")
