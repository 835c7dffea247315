"""The Llama-style decoder and document masking, on CPU: packed documents never attend to each other (a packed
sample's logits equal each document's alone), positions restart at each document, attention is causal in
every kernel, FLOPs equal what PyTorch's FLOP counter counts, a folder made by transformers continues with
its own logits. Real runs: tests/test_llama_runs.py."""

from __future__ import annotations

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


def test_init_from_refuses_another_familys_folder(tmp_path):
    from transformers import GPT2Config, GPT2LMHeadModel

    GPT2LMHeadModel(GPT2Config(vocab_size=300, n_embd=32, n_layer=1, n_head=2)).save_pretrained(tmp_path / "gpt2")
    with pytest.raises(ValueError, match="is a gpt2 model, but model.preset=llama-tiny asks for the llama family"):
        tiny(init_from=str(tmp_path / "gpt2"))


def test_a_release_continued_with_another_tokenizer_exports_that_tokenizers_stop_token():
    """The release's configs name its own bos/eos ids, which another tokenizer (a data.tokenizer of the run's
    own) gives to other tokens: generate() would never stop on the end of text the run trained on. The export
    takes the tokenizer's ids there, keeps the release's sampling defaults, and keeps every id of a release
    whose stop tokens include the tokenizer's end of text (Llama 3's several)."""
    from transformers import GenerationConfig, LlamaConfig

    from pretrain.export import stop_on_the_tokenizers_end_of_text

    ours = GenerationConfig(bos_token_id=5, eos_token_id=0, pad_token_id=0)
    release = GenerationConfig(bos_token_id=1, eos_token_id=1, temperature=0.6, do_sample=True)
    model_config = LlamaConfig(bos_token_id=1, eos_token_id=1)
    stop_on_the_tokenizers_end_of_text([model_config, release], ours)
    for config in (release, model_config):
        assert (config.bos_token_id, config.eos_token_id, config.pad_token_id) == (5, 0, 0)
    assert (release.temperature, release.do_sample) == (0.6, True)
    several, alone = GenerationConfig(bos_token_id=1, eos_token_id=[7, 0, 9]), LlamaConfig(bos_token_id=1, eos_token_id=1)
    stop_on_the_tokenizers_end_of_text([alone, several], ours)  # each config on its own
    assert (several.bos_token_id, several.eos_token_id, several.pad_token_id) == (1, [7, 0, 9], None)
    assert (alone.bos_token_id, alone.eos_token_id, alone.pad_token_id) == (5, 0, 0)
