"""The Llama-style decoder and document masking, on CPU: packed documents never attend to each other (a packed
sample's logits equal each document's alone), positions restart at each document, attention is causal in
every kernel, FLOPs equal what PyTorch's FLOP counter counts, a folder made by transformers continues with
its own logits, and (slow) a 2-rank run resumes exactly and exports a LlamaForCausalLM with the trainer's
logits."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch

from pretrain.config import ModelConfig
from pretrain.data.collate import collate
from pretrain.data.gpt_dataset import document_positions
from pretrain.model import build_model
from tests.packing import assert_each_document_alone, packed_rows

SPECIALS = {"eod": 1, "pad": 0, "cls": 2, "sep": 3, "mask": 4, "unk": 5}
EOD = SPECIALS["eod"]
VOCAB = 300


def tiny(preset: str = "llama-tiny", **fields):
    torch.manual_seed(0)
    return build_model(ModelConfig(preset=preset, **fields), VOCAB, SPECIALS, sentence_order=False, seed=1,
                       ds_config=None).double().eval()


def logits(model, inputs: torch.Tensor, position_ids: torch.Tensor | None = None) -> torch.Tensor:
    """The trainer's own forward up to the logits: the family's trunk, then the (tied or untied) head weight."""
    with torch.no_grad():
        hidden = model.family.trunk(model.hf, inputs, position_ids)
        return hidden @ model.head.weight.T


def documents(lengths: list[int], seed: int = 0) -> list[torch.Tensor]:
    """Documents of these lengths, each ending with the end-of-document token."""
    generator = torch.Generator().manual_seed(seed)
    docs = []
    for length in lengths:
        doc = torch.randint(6, VOCAB, (length,), generator=generator)
        doc[-1] = EOD
        docs.append(doc)
    return docs


def test_document_positions_restart_after_each_end_of_document():
    inputs = np.array([7, 8, EOD, 9, EOD, EOD, 3, 4, 5])
    assert document_positions(inputs, EOD).tolist() == [0, 1, 2, 0, 1, 0, 0, 1, 2]
    assert document_positions(np.array([EOD]), EOD).tolist() == [0]


def test_collate_gives_the_varlen_kernels_boundaries():
    samples = [{"tokens": torch.arange(6), "position_ids": torch.tensor([0, 1, 0, 1, 2])},
               {"tokens": torch.arange(6), "position_ids": torch.tensor([3, 4, 0, 0, 1])}]
    batch = collate(samples)
    assert batch["cu_seqlens"].dtype == torch.int32
    assert batch["cu_seqlens"].tolist() == [0, 2, 5, 7, 8, 10]  # a sample's first token may continue a document
    assert batch["num_labels"] == 10


@pytest.mark.parametrize("preset,attention", [("llama-tiny", "sdpa"), ("llama-tiny", "eager"), ("tiny-gpt2", "sdpa"),
                                              ("tiny-gpt2", "eager")])
def test_a_packed_sample_gives_each_documents_own_logits(preset, attention):
    """Three documents packed into one sample (and a second sample cut differently), with the positions the
    dataset makes: each document's logits equal those of the document run alone (fp64; transformers' eager
    Llama attention takes its softmax in fp32, whose sums over rows of other lengths round differently)."""
    model = tiny(preset, attention=attention)
    tolerance = 1e-6 if (preset, attention) == ("llama-tiny", "eager") else 1e-10
    docs = documents([5, 9, 7])
    inputs = packed_rows(docs)
    positions = torch.from_numpy(np.stack([document_positions(row.numpy(), EOD) for row in inputs]))
    got = logits(model, inputs, positions)
    assert_each_document_alone(got, docs, lambda doc: logits(model, doc), tolerance)
    unmasked = logits(model, inputs)  # without the positions the later documents see the earlier ones
    assert not torch.allclose(unmasked[0, 5:14], got[0, 5:14])


@pytest.mark.parametrize("preset,attention", [("llama-tiny", "sdpa"), ("llama-tiny", "eager"), ("tiny-gpt2", "sdpa"),
                                              ("tiny-gpt2", "eager")])
def test_attention_is_causal_in_every_kernel(preset, attention):
    """Changing later tokens never changes earlier logits (eager attention applies only the mask it is
    given: the trunk must give it the causal one)."""
    model = tiny(preset, attention=attention)
    inputs = torch.randint(6, VOCAB, (2, 16), generator=torch.Generator().manual_seed(3))
    changed = inputs.clone()
    changed[:, 10:] = torch.randint(6, VOCAB, (2, 6), generator=torch.Generator().manual_seed(4))
    a, b = logits(model, inputs), logits(model, changed)
    torch.testing.assert_close(a[:, :10], b[:, :10], rtol=1e-10, atol=1e-10)
    assert not torch.allclose(a[:, 10:], b[:, 10:])


def varlen_reference(module, query, key, value, attention_mask, dropout=0.0, scaling=None, **kwargs):
    """FlashAttention's varlen contract on CPU, as transformers' flash path calls it: the batch flattened,
    each [cu_seqlens[i], cu_seqlens[i+1]) segment attending causally within itself."""
    cu = kwargs["cu_seq_lens_q"].tolist()
    assert kwargs["cu_seq_lens_k"] is kwargs["cu_seq_lens_q"] and attention_mask is None
    assert kwargs["max_length_q"] == query.shape[2]  # the sample length bounds every document: nothing read back
    batch, heads, length, dim = query.shape
    groups = heads // key.shape[1]
    q, k, v = (t.transpose(1, 2).reshape(batch * length, t.shape[1], dim) for t in (query, key, value))
    k, v = k.repeat_interleave(groups, dim=1), v.repeat_interleave(groups, dim=1)
    out = torch.empty_like(q)
    for start, end in zip(cu[:-1], cu[1:]):
        out[start:end] = torch.nn.functional.scaled_dot_product_attention(
            q[start:end].transpose(0, 1), k[start:end].transpose(0, 1), v[start:end].transpose(0, 1), is_causal=True,
            scale=scaling).transpose(0, 1)
    return out.view(batch, length, heads, dim), None


def test_the_varlen_kernels_path_gives_the_masked_logits(monkeypatch, caplog):
    """Where flash-attn is missing (here), a GPU run falls back to SDPA and says so. The varlen path itself, with
    a CPU stand-in for FlashAttention's kernel registered as transformers' flash_attention_2: the boundaries
    the collate function makes reach every block and give the logits of the masked SDPA path."""
    import logging

    from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

    model = tiny()
    with caplog.at_level(logging.INFO):
        chosen = model.family.configure_attention(model.hf, document_mask=True, on_gpu=True)
    assert chosen.kind == "sdpa" and "flash-attn unavailable" in caplog.text
    docs = documents([5, 9, 7, 11])
    tokens = torch.stack([torch.cat(docs + [docs[0][:1]])[:33], torch.cat(docs[::-1] + [docs[0][:1]])[:33]])
    samples = [{"tokens": row, "position_ids": torch.from_numpy(document_positions(row[:-1].numpy(), EOD))}
               for row in tokens]
    batch = collate(samples)
    want = logits(model, batch["tokens"][:, :-1], batch["position_ids"])
    monkeypatch.setitem(ALL_ATTENTION_FUNCTIONS._global_mapping, "flash_attention_2", varlen_reference)
    model.hf.config._attn_implementation = "flash_attention_2"
    with torch.no_grad():
        hidden = model.family.trunk(model.hf, batch["tokens"][:, :-1], batch["position_ids"], batch["cu_seqlens"])
    torch.testing.assert_close(hidden @ model.head.weight.T, want, rtol=1e-10, atol=1e-10)


def test_llama_trunk_equals_transformers_forward():
    """The trainer's module-by-module forward gives LlamaForCausalLM's own logits (tied and untied)."""
    for tied in (True, False):
        model = tiny(tie_embeddings=tied)
        assert (model.hf.lm_head.weight is model.hf.model.embed_tokens.weight) == tied
        inputs = torch.randint(6, VOCAB, (2, 20), generator=torch.Generator().manual_seed(5))
        with torch.no_grad():
            want = model.hf(input_ids=inputs).logits
        torch.testing.assert_close(logits(model, inputs), want, rtol=1e-10, atol=1e-10)


def test_model_config_keys_reach_the_transformers_config():
    model = tiny(rope_theta=500000.0, tie_embeddings=False)
    config = model.hf.config
    assert config.rope_parameters["rope_theta"] == 500000.0 and config.tie_word_embeddings is False
    assert (config.num_attention_heads, config.num_key_value_heads, config.intermediate_size) == (4, 2, 176)
    assert not any(name.endswith("bias") for name, _ in model.named_parameters())  # no biases anywhere
    norms = [m for m in model.hf.modules() if type(m).__name__ == "LlamaRMSNorm"]
    assert len(norms) == 5 and all(bool((m.weight == 1).all()) for m in norms)  # RMSNorm starts at 1


@pytest.mark.parametrize("head_dim", [None, 24], ids=["hidden-over-heads", "wider-heads-of-a-folder"])
def test_flops_equal_pytorchs_count_of_the_matmuls(tmp_path, head_dim):
    """Forward + backward of the trainer's loss (a GQA model with a gated MLP, untied head): the FLOPs PyTorch's
    FlopCounterMode counts equal the family's formula. Eager attention, whose score and value matmuls the
    counter sees (it has no formula for the CPU's SDPA kernel), over the full square as Megatron counts. Also
    for a folder whose heads are wider than hidden / heads (6 heads of 24 on a 48-wide model), as pruned
    releases have: its queries and attention output are 144 wide."""
    from torch.utils.flop_counter import FlopCounterMode
    from transformers import LlamaConfig, LlamaForCausalLM

    fields = {"tie_embeddings": False}
    if head_dim:
        LlamaForCausalLM(LlamaConfig(vocab_size=VOCAB, hidden_size=48, intermediate_size=96, num_hidden_layers=2,
                                     num_attention_heads=6, num_key_value_heads=2, head_dim=head_dim,
                                     max_position_embeddings=256, tie_word_embeddings=False)).save_pretrained(tmp_path)
        fields = {"init_from": str(tmp_path)}
    model = tiny(lm_head="plain", attention="eager", **fields).float().train()
    assert model.shape.head_dim == (head_dim or 16)
    batch = {"tokens": torch.randint(6, VOCAB, (2, 33))}
    with FlopCounterMode(display=False) as counter:
        loss, _ = model(batch)
        loss.backward()
    counted = counter.get_total_flops()
    shape, vocab = model.shape, model.hf.config.vocab_size
    formula = model.family.flops(shape, 32, vocab, 64)
    assert counted == pytest.approx(formula, rel=1e-9), (counted, formula)


def test_only_a_family_whose_model_takes_a_head_width_can_be_given_one():
    """GPT-2, BERT and ModernBERT build heads of hidden / heads whatever a preset says: a head_size there would be
    counted in FLOPs and memory but never built, so it is refused."""
    import dataclasses

    from pretrain.presets import get_preset

    assert dataclasses.replace(get_preset("llama-tiny"), head_size=32).attention_width == 128
    for preset in ("tiny-gpt2", "tiny-bert", "modernbert-tiny"):
        with pytest.raises(ValueError, match="head_size would be counted but never built"):
            dataclasses.replace(get_preset(preset), head_size=32)


def test_init_from_a_transformers_folder_gives_its_logits(tmp_path, caplog):
    """A LlamaForCausalLM made by transformers (random weights, GQA, rotary base 50,000, untied) continues
    with its own logits; a tokenizer larger than its embedding grows it and leaves the logits of the
    existing tokens unchanged. A rotary base or tying the model section sets is not applied, and said so."""
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(vocab_size=280, hidden_size=48, intermediate_size=96, num_hidden_layers=2,
                         num_attention_heads=6, num_key_value_heads=2, max_position_embeddings=256,
                         rope_parameters={"rope_type": "default", "rope_theta": 50000.0}, tie_word_embeddings=False,
                         rms_norm_eps=1e-5)
    torch.manual_seed(7)
    theirs = LlamaForCausalLM(config).eval()
    theirs.save_pretrained(tmp_path / "released")
    inputs = torch.randint(0, 280, (2, 24), generator=torch.Generator().manual_seed(8))
    with torch.no_grad():
        want = theirs.double()(input_ids=inputs).logits
    for vocab in (280, VOCAB):  # the same rows; more tokens than rows
        ours = build_model(ModelConfig(preset="llama-tiny", init_from=str(tmp_path / "released"), vocab_multiple=8),
                           vocab, SPECIALS, sentence_order=False, seed=1, ds_config=None).double().eval()
        assert ours.hf.config.vocab_size == (280 if vocab == 280 else 304)
        assert ours.shape.hidden == 48 and ours.shape.key_value_heads == 2 and ours.shape.rope_theta == 50000.0
        got = logits(ours, inputs)
        torch.testing.assert_close(got[..., :280], want, rtol=1e-9, atol=1e-9)
        unloaded = build_model(ModelConfig(preset="llama-tiny", init_from=str(tmp_path / "released"), vocab_multiple=8),
                               vocab, SPECIALS, sentence_order=False, seed=1, ds_config=None, load_weights=False)
        assert unloaded.hf.config.vocab_size == ours.hf.config.vocab_size  # a resumed launch's rows: the same
    with caplog.at_level("WARNING"):
        kept = build_model(ModelConfig(preset="llama-tiny", init_from=str(tmp_path / "released"), rope_theta=1e6,
                                       tie_embeddings=True), 280, SPECIALS, sentence_order=False, seed=1, ds_config=None)
    assert kept.shape.rope_theta == 50000.0 and not kept.shape.tie_embeddings
    assert "model.rope_theta=1000000.0 is not applied" in caplog.text and "model.tie_embeddings=True is not" in caplog.text


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
    assert generation["pad_token_id"] == tokenizer.specials.pad  # the release named none
    assert AutoTokenizer.from_pretrained(tmp_path / "hf").chat_template == CHAT_TEMPLATE


def test_init_from_refuses_another_familys_folder(tmp_path):
    from transformers import GPT2Config, GPT2LMHeadModel

    GPT2LMHeadModel(GPT2Config(vocab_size=300, n_embd=32, n_layer=1, n_head=2)).save_pretrained(tmp_path / "gpt2")
    with pytest.raises(ValueError, match="is a gpt2 model, but model.preset=llama-tiny asks for the llama family"):
        tiny(init_from=str(tmp_path / "gpt2"))


# ------------------------------------------------------------------------------------ a real run (slow)
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
