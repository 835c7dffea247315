"""Real Llama runs on CPU (slow): two ranks of tiny_llama with a tokenizer laid out as Llama 3's that resume
exactly, under ZeRO-3 with full recompute give the curve without ZeRO and resume on one rank, and export a
LlamaForCausalLM with the trainer's logits; and continued pretraining of a release that resumes without the
released folder and keeps the release's settings in its export."""

from __future__ import annotations

import json
import shutil

import pytest
import torch

STEPS, STOP = 6, 3
RUN = (f"train.steps={STEPS}", "train.log_interval=1", f"train.eval_interval={STOP}", f"train.save_interval={STOP}",
       "optim.warmup_steps=2", "train.eval_samples=16", "data.split=80,20,0", "train.stop_check_interval=1",
       "train.global_batch=8", "model.tie_embeddings=false", "model.rope_theta=20000")


@pytest.fixture(scope="module")
def llama_runs(tmp_path_factory, small_corpus, llama3_style_tokenizer):
    """An uninterrupted 2-rank run of tiny_llama (document masking on, the default plan: no ZeRO), the same run
    stopped at step 3 and resumed, and the same run under ZeRO-3 with every block recomputing, stopped at step 3
    and resumed on 2 ranks and (a copy, through the universal checkpoint) on 1. The tokenizer is laid out as
    Llama 3's: each document <|begin_of_text|> ... <|end_of_text|>."""
    from tests.distributed import launch, preprocess

    tokenizer_dir = llama3_style_tokenizer

    root = tmp_path_factory.mktemp("llama")
    preprocess(small_corpus, tokenizer_dir, root / "data", "--append-eod")
    data = (f"data.tokenizer={tokenizer_dir}", f"data.prefixes=[{root / 'data_text_document'}]", *RUN)
    full, stopped = root / "full", root / "stopped"
    out = {"full": launch(2, "tiny_llama", full, *data), "dirs": {"full": full, "stopped": stopped},
           "prefix": root / "data_text_document", "tokenizer": tokenizer_dir}
    launch(2, "tiny_llama", stopped, *data, f"train.exit_interval={STOP}", expect=75)
    out["resumed"] = launch(2, "tiny_llama", stopped, *data)
    zero3 = (*data, "train.ds_config=zero3", "model.activation_checkpointing=full")
    out["dirs"].update(zero3=root / "zero3", zero3_on1=root / "zero3_on1")
    launch(2, "tiny_llama", root / "zero3", *zero3, f"train.exit_interval={STOP}", expect=75)
    shutil.copytree(root / "zero3", root / "zero3_on1")
    out["zero3"] = launch(2, "tiny_llama", root / "zero3", *zero3)
    launch(1, "tiny_llama", root / "zero3_on1", *zero3)
    return out


@pytest.mark.slow
def test_llama_run_resumes_exactly(llama_runs):
    from tests.distributed import assert_run_records, metrics

    full, full_evals = metrics(llama_runs["dirs"]["full"])
    resumed, resumed_evals = metrics(llama_runs["dirs"]["stopped"])
    assert sorted(full) == sorted(resumed) == list(range(1, STEPS + 1))
    for step in range(STOP + 1, STEPS + 1):
        assert resumed[step] == pytest.approx(full[step], rel=1e-5, abs=1e-6), step
    assert resumed_evals[-1]["eval_loss"] == pytest.approx(full_evals[-1]["eval_loss"], rel=1e-5)
    assert full[STEPS] < full[1] and full_evals[-1]["eval_loss"] < full_evals[0]["eval_loss"]
    log = llama_runs["full"].stderr
    assert "document mask: sdpa attention with a mask built on the device" in log
    config = (llama_runs["dirs"]["full"] / "config.yaml").read_text()
    assert "document_mask: true" in config and "rope_theta: 20000.0" in config
    assert_run_records(llama_runs["dirs"]["full"], llama_runs["dirs"]["stopped"], 2, STEPS)


@pytest.mark.slow
def test_zero3_with_full_recompute_gives_the_same_losses_and_resumes_on_one_rank(llama_runs):
    """ZeRO-3 (real partitions: each rank holds at most half the parameters, untied head included; each block
    gathered at once) and full recompute change where the arithmetic runs, not what it computes: stopped and
    resumed, the curve of the run without ZeRO, rel 1e-4; and its checkpoint, converted to the universal
    format, resumes on one rank to the same losses."""
    from pretrain.checkpoint import tag_for
    from tests.distributed import metrics, partition_sizes

    reference, _ = metrics(llama_runs["dirs"]["full"])
    losses, evals = metrics(llama_runs["dirs"]["zero3"])
    on_one, _ = metrics(llama_runs["dirs"]["zero3_on1"])
    assert sorted(losses) == sorted(on_one) == list(range(1, STEPS + 1)) and evals
    for step in range(1, STEPS + 1):
        assert losses[step] == pytest.approx(reference[step], rel=1e-4, abs=1e-6), step
        assert on_one[step] == pytest.approx(losses[step], rel=1e-4, abs=1e-6), step
    assert (llama_runs["dirs"]["zero3_on1"] / "checkpoints" / f"{tag_for(STOP)}_universal").exists()
    sizes = partition_sizes(llama_runs["dirs"]["zero3"])
    assert set(sizes) == {0, 1} and all(held <= total // 2 + 1000 for held, total in sizes.values())
    log = llama_runs["zero3"].stderr
    assert "ZeRO-3 gathers each of the 2 transformer blocks' parameters at once" in log
    assert "recompute full:" in log and "activation checkpointing: 2 of 2 transformer blocks recompute" in log


@pytest.mark.slow
def test_llama_export_gives_the_trainers_logits(llama_runs, tmp_path):
    """pretrain-export writes a LlamaForCausalLM folder (safetensors, tokenizer, generation config) whose fp32
    logits equal the trainer's model's, loaded from the same checkpoint, within 1e-4. The run's documents
    started with its tokenizer's BOS, and the folder's tokenizer and generation config name that BOS."""
    from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaForCausalLM

    from pretrain.data.indexed import IndexedDataset
    from pretrain.tokenization import load_tokenizer
    from tests.conftest import run_tool
    from tests.distributed import trained_model

    run_dir = llama_runs["dirs"]["full"]
    run_tool("export_hf", run_dir, tmp_path / "hf")
    assert {"model.safetensors", "config.json", "generation_config.json", "tokenizer.json"} <= {
        p.name for p in (tmp_path / "hf").iterdir()}
    exported = AutoModelForCausalLM.from_pretrained(tmp_path / "hf", dtype=torch.float32).eval()
    assert isinstance(exported, LlamaForCausalLM) and exported.config.rope_parameters["rope_theta"] == 20000.0
    tokenizer = load_tokenizer(llama_runs["tokenizer"])
    generation = json.loads((tmp_path / "hf" / "generation_config.json").read_text())
    assert (generation["bos_token_id"], generation["eos_token_id"]) == (tokenizer.bos_id, tokenizer.specials.eod)
    assert IndexedDataset(str(llama_runs["prefix"])).document(0)[0] == tokenizer.bos_id  # trained with the BOS

    trained = trained_model(run_dir, STEPS)
    text = AutoTokenizer.from_pretrained(tmp_path / "hf")("안녕하세요. Guten Tag, wie geht es?", return_tensors="pt")
    inputs = text.input_ids
    assert [tokenizer.bos_id, *tokenizer.encode(["안녕하세요. Guten Tag, wie geht es?"])[0]] == inputs[0].tolist()
    with torch.no_grad():
        want = trained.family.trunk(trained.hf, inputs) @ trained.head.weight.T
        got = exported(input_ids=inputs).logits
    assert (got - want).abs().max().item() <= 1e-4
    generated = exported.generate(inputs, max_new_tokens=4, min_new_tokens=4, do_sample=False)
    assert generated.shape[1] == inputs.shape[1] + 4
    shutil.rmtree(tmp_path / "hf")


@pytest.mark.slow
def test_continued_pretraining_resumes_without_the_released_folder(tmp_path, small_corpus, llama3_style_tokenizer):
    """Continued pretraining as the README shows it, on a Llama-3-layout release (random weights, rotary base
    500,000 with llama3 scaling, tied, the tokenizer's vocabulary, BOS-first data), on 2 ranks under ZeRO-3:
    stopped at step 3, the folder moved away, the run resumes from its checkpoint alone (the architecture
    from RUN_DIR/model, the embedding grown to the tokenizer, built in partitions) to the losses of 1 rank
    without ZeRO, uninterrupted; its export keeps the release's sampling defaults, and the chat template of
    data.tokenizer (the release's tokenizer)."""
    from transformers import AutoTokenizer, GenerationConfig, LlamaConfig, LlamaForCausalLM

    from pretrain.model import padded_vocab_size
    from pretrain.tokenization import load_tokenizer
    from tests.conftest import CHAT_TEMPLATE, run_tool
    from tests.distributed import launch, metrics, preprocess

    tokenizer = load_tokenizer(llama3_style_tokenizer)
    rows = tokenizer.vocab_size - 2  # the tokenizer has two tokens more: the embedding grows (to 1,088 rows)
    config = LlamaConfig(vocab_size=rows, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                         rope_parameters={"rope_type": "llama3", "rope_theta": 500000.0, "factor": 8.0,
                                          "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                                          "original_max_position_embeddings": 64},
                         tie_word_embeddings=True, bos_token_id=tokenizer.bos_id, eos_token_id=tokenizer.specials.eod)
    torch.manual_seed(3)
    LlamaForCausalLM(config).save_pretrained(tmp_path / "release")
    GenerationConfig(bos_token_id=tokenizer.bos_id, eos_token_id=tokenizer.specials.eod, do_sample=True,
                     temperature=0.6, top_p=0.9).save_pretrained(tmp_path / "release")  # as Llama 3 ships
    preprocess(small_corpus, llama3_style_tokenizer, tmp_path / "data", "--append-eod")
    run = (f"data.tokenizer={llama3_style_tokenizer}", f"data.prefixes=[{tmp_path / 'data_text_document'}]",
           f"model.init_from={tmp_path / 'release'}", f"train.steps={STEPS}", "train.log_interval=1",
           f"train.save_interval={STOP}", f"train.eval_interval={STOP}", "train.eval_samples=16",
           "data.split=80,20,0", "train.global_batch=8", "optim.warmup_steps=2")
    launch(1, "tiny_llama", tmp_path / "full", *run)
    zero3 = (*run, "train.ds_config=zero3")  # the release loaded into partitions; the resumed model built in them
    launch(2, "tiny_llama", tmp_path / "stopped", *zero3, f"train.exit_interval={STOP}", expect=75)
    (tmp_path / "release").rename(tmp_path / "moved")
    resumed = launch(2, "tiny_llama", tmp_path / "stopped", *zero3)
    assert "the model is built from" in resumed.stderr and "resumed from step" in resumed.stderr
    full, _ = metrics(tmp_path / "full")
    stopped, _ = metrics(tmp_path / "stopped")
    assert sorted(stopped) == list(range(1, STEPS + 1))
    for step in range(1, STEPS + 1):
        assert stopped[step] == pytest.approx(full[step], rel=1e-4, abs=1e-6), step
    saved = json.loads((tmp_path / "stopped" / "model" / "config.json").read_text())
    assert saved["rope_parameters"]["rope_type"] == "llama3" and saved["tie_word_embeddings"]
    assert saved["vocab_size"] == padded_vocab_size(tokenizer.vocab_size, 64) > rows
    run_tool("export_hf", tmp_path / "stopped", tmp_path / "hf")  # the release still elsewhere: its settings kept
    generation = json.loads((tmp_path / "hf" / "generation_config.json").read_text())
    assert (generation["temperature"], generation["top_p"], generation["do_sample"]) == (0.6, 0.9, True)
    assert generation["pad_token_id"] == tokenizer.specials.eod  # the release named none: its end of text, as generate's
    exported = AutoTokenizer.from_pretrained(tmp_path / "hf")
    assert exported.chat_template == CHAT_TEMPLATE and exported.pad_token is None
    assert len(exported) == len(AutoTokenizer.from_pretrained(llama3_style_tokenizer))  # no special token added
