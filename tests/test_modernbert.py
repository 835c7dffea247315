"""The ModernBERT encoder family, on CPU: the trainer's forward gives ModernBertForMaskedLM's own logits and
loss (with padding, SDPA and eager), a packed sample (unpadded batches) gives each document's own logits (the
masks and the varlen kernel's path), the local layers see 64 tokens either side and no further, the rotary
bases are ModernBERT's, FLOPs equal PyTorch's count of the matmuls, a folder made by transformers (its own
window, layer pattern and bases) continues with its own logits, and the config layer's family defaults.
Real runs: tests/test_modernbert_runs.py."""

from __future__ import annotations

import pytest
import torch

from pretrain.config import Config, ConfigError, ModelConfig, load_config, validate
from pretrain.model import build_model
from pretrain.model.families import get_family
from pretrain.model.families.modernbert import encoder_masks, rotary_tables
from tests.packing import assert_each_document_alone, packed_rows

SPECIALS = {"eod": 1, "pad": 0, "cls": 2, "sep": 3, "mask": 4, "unk": 5}
VOCAB = 300
LENGTH = 160  # longer than a local layer's reach (64 either side): the window matters


def tiny(dtype: torch.dtype = torch.float32, **fields):
    torch.manual_seed(0)
    model = build_model(ModelConfig(preset="modernbert-tiny", **fields), VOCAB, SPECIALS, sentence_order=False, seed=1,
                        ds_config=None)
    return model.to(dtype).eval()


@pytest.mark.parametrize("preset", ["modernbert-tiny", "llama-tiny"])
def test_weights_start_from_the_familys_normal(preset):
    """ModernBERT's weights start from a normal truncated at 2 std (its reference's and transformers' init):
    none beyond, and a spread of 0.88 std; the residual outputs at 0.02 / sqrt(2 x layers), the inputs at 0.02.
    Llama's are not truncated. Norms start at 1."""
    import math

    model = build_model(ModelConfig(preset=preset), 4096, SPECIALS, sentence_order=False, seed=1, ds_config=None)
    truncated = preset.startswith("modernbert")
    spread = 0.8796 if truncated else 1.0  # the standard deviation of a normal cut at +-2 std, in std
    outputs, inputs = (("attn.Wo", "mlp.Wo"), ("attn.Wqkv", "mlp.Wi")) if truncated else (
        ("o_proj", "down_proj"), ("q_proj", "gate_proj"))
    layers = model.hf.config.num_hidden_layers
    checked = 0
    for name, param in model.hf.named_parameters():
        values = param.detach().double()
        if "norm" in name:
            assert torch.equal(values, torch.ones_like(values)), name
            continue
        std = 0.02 / math.sqrt(2 * layers) if name.endswith(tuple(f"{n}.weight" for n in outputs)) else 0.02
        if name.endswith(tuple(f"{n}.weight" for n in inputs + outputs)) or "embed" in name:
            checked += 1
            assert values.std().item() == pytest.approx(spread * std, rel=0.06), name
            beyond = (values.abs() > 2 * std * (1 + 1e-6)).double().mean().item()  # float32's cut may round up
            assert (beyond == 0) if truncated else (0.03 < beyond < 0.06), (name, beyond)
    assert checked == 4 * layers + 1


def padded_batch(lengths: list[int], width: int = LENGTH, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """(input_ids, attention_mask): rows of ``lengths`` real tokens ([CLS] first, [SEP] last), padded to ``width``."""
    generator = torch.Generator().manual_seed(seed)
    ids = torch.full((len(lengths), width), SPECIALS["pad"])
    mask = torch.zeros(len(lengths), width, dtype=torch.long)
    for row, length in enumerate(lengths):
        ids[row, :length] = torch.randint(6, VOCAB, (length,), generator=generator)
        ids[row, 0], ids[row, length - 1] = SPECIALS["cls"], SPECIALS["sep"]
        mask[row, :length] = 1
    return ids, mask


def trainer_logits(model, ids: torch.Tensor, mask: torch.Tensor | None = None, positions: torch.Tensor | None = None,
                   cu_seqlens: torch.Tensor | None = None) -> torch.Tensor:
    """The trainer's forward up to the logits: the family's trunk, the prediction head, the tied decoder and its bias."""
    with torch.no_grad():
        hidden = model.hf.head(model.family.trunk(model.hf, ids, mask, positions, cu_seqlens))
        return hidden @ model.head.weight.T + model.head.bias


def documents(lengths: list[int], seed: int = 0) -> list[torch.Tensor]:
    """Documents as packed samples hold them: [CLS], ``length - 2`` tokens, [SEP]."""
    generator = torch.Generator().manual_seed(seed)
    return [torch.cat([torch.tensor([SPECIALS["cls"]]), torch.randint(6, VOCAB, (n - 2,), generator=generator),
                       torch.tensor([SPECIALS["sep"]])]) for n in lengths]


def packed_positions(inputs: torch.Tensor) -> torch.Tensor:
    """The positions PackedMLMDataset gives: 0 at every [CLS] and at a sample's first token, counting up."""
    index = torch.arange(inputs.shape[1]).expand_as(inputs)
    starts = inputs == SPECIALS["cls"]
    starts[:, 0] = True
    return index - torch.where(starts, index, 0).cummax(dim=1).values


@pytest.mark.parametrize("attention", ["sdpa", "eager"])
def test_trainer_forward_equals_transformers_forward(attention):
    """fp32: the family's trunk gives ModernBertForMaskedLM's logits at every real token, with padding in the
    batch (and without: then the batch carries no mask), and the trainer's loss over the gathered masked
    positions is transformers' cross-entropy over the same positions."""
    model = tiny(attention=attention, lm_head="plain")
    ids, mask = padded_batch([LENGTH, 150, 70, 9])
    with torch.no_grad():
        want = model.hf(input_ids=ids, attention_mask=mask).logits
    got = trainer_logits(model, ids, mask)
    real = mask.bool()
    torch.testing.assert_close(got[real], want[real], rtol=1e-5, atol=1e-5)
    full = ids[:1]
    with torch.no_grad():
        want_full = model.hf(input_ids=full).logits
    torch.testing.assert_close(trainer_logits(model, full), want_full, rtol=1e-5, atol=1e-5)

    generator = torch.Generator().manual_seed(1)
    labels = torch.full_like(ids, -100)
    positions = torch.zeros(len(ids), 12, dtype=torch.long)  # padded with position 0, whose label is -100
    for row, length in enumerate(mask.sum(1).tolist()):
        chosen = torch.randperm(length - 2, generator=generator)[: min(12, length // 3)] + 1
        positions[row, : len(chosen)] = chosen
        labels[row, chosen] = torch.randint(6, VOCAB, (len(chosen),), generator=generator)
    batch = {"input_ids": ids, "attention_mask": mask, "token_type_ids": torch.zeros_like(ids), "labels": labels,
             "masked_positions": positions}
    with torch.no_grad():
        loss, count = model(batch)
        reference = torch.nn.functional.cross_entropy(want.reshape(-1, want.shape[-1]).float(),
                                                      labels.reshape(-1), ignore_index=-100)
    assert count.item() == int((labels != -100).sum())
    torch.testing.assert_close(loss, reference, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("attention", ["sdpa", "eager"])
def test_a_packed_sample_gives_each_documents_own_logits(attention):
    """Unpadded batches: three documents packed into one sample (and in another order in a second), with the
    positions the dataset makes: each document's logits equal those of the document run alone, in the local
    layers (documents longer than their 64-token reach, neighbours within it) and the global ones (fp64;
    eager attention takes its softmax in fp32). Without the positions, later documents see earlier ones."""
    model = tiny(torch.float64, attention=attention)
    tolerance = 1e-6 if attention == "eager" else 1e-10
    docs = documents([100, 20, 90])
    inputs = packed_rows(docs)
    got = trainer_logits(model, inputs, positions=packed_positions(inputs))
    assert_each_document_alone(got, docs, lambda doc: trainer_logits(model, doc), tolerance)
    unmasked = trainer_logits(model, inputs)
    assert not torch.allclose(unmasked[0, 100:120], got[0, 100:120])


def varlen_reference(module, query, key, value, attention_mask, dropout=0.0, scaling=None, sliding_window=None,
                     **kwargs):
    """FlashAttention's varlen contract on CPU, as transformers' flash path calls it for ModernBERT: the batch
    flattened, each [cu_seqlens[i], cu_seqlens[i+1]) segment attending within itself, both ways, a local layer
    (``sliding_window`` = reach + 1) within ``sliding_window - 1`` positions either side."""
    cu = kwargs["cu_seq_lens_q"].tolist()
    assert kwargs["cu_seq_lens_k"] is kwargs["cu_seq_lens_q"] and attention_mask is None
    assert kwargs["max_length_q"] == query.shape[2]
    batch, heads, length, dim = query.shape
    q, k, v = (t.transpose(1, 2).reshape(batch * length, heads, dim) for t in (query, key, value))
    out = torch.empty_like(q)
    for start, end in zip(cu[:-1], cu[1:]):
        index = torch.arange(end - start)
        band = None if sliding_window is None else (index[:, None] - index[None, :]).abs() < sliding_window
        out[start:end] = torch.nn.functional.scaled_dot_product_attention(
            q[start:end].transpose(0, 1), k[start:end].transpose(0, 1), v[start:end].transpose(0, 1),
            attn_mask=band, scale=scaling).transpose(0, 1)
    return out.view(batch, length, heads, dim), None


def test_the_varlen_kernels_path_gives_the_masked_logits(monkeypatch, caplog):
    """Where flash-attn is missing (here), a GPU run of packed documents falls back to SDPA and says so. The
    varlen path itself, with a CPU stand-in for FlashAttention's kernel registered as transformers'
    flash_attention_2: the boundaries the collate function makes reach every block, the local layers their
    window, and the logits equal the masked SDPA path's."""
    import logging

    from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

    from pretrain.data.collate import collate

    model = tiny(torch.float64)
    with caplog.at_level(logging.INFO):
        chosen = model.family.configure_attention(model.hf, document_mask=True, on_gpu=True)
    assert chosen.kind == "sdpa" and "flash-attn unavailable" in caplog.text
    docs = documents([100, 20, 90, 30])
    rows = [torch.cat(docs)[:200], torch.cat(docs[::-1])[:200]]
    samples = [{"input_ids": row, "position_ids": packed_positions(row[None])[0],
                "labels": torch.full_like(row, -100), "masked_positions": torch.zeros(4, dtype=torch.long)}
               for row in rows]
    batch = collate(samples)
    want = trainer_logits(model, batch["input_ids"], positions=batch["position_ids"])
    monkeypatch.setitem(ALL_ATTENTION_FUNCTIONS._global_mapping, "flash_attention_2", varlen_reference)
    model.hf.config._attn_implementation = "flash_attention_2"
    got = trainer_logits(model, batch["input_ids"], positions=batch["position_ids"], cu_seqlens=batch["cu_seqlens"])
    torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-10)


def test_forward_and_backward_read_nothing_back_to_the_host():
    """The trainer's loss and its gradients on a padded batch and on packed documents: no value read, no copy
    to the host, no data-dependent shape (pretrain/host_sync.py); transformers' own forward asks whether the
    mask is all ones."""
    from pretrain.host_sync import HostSyncs

    model = tiny().train()
    ids, mask = padded_batch([LENGTH, 100])
    labels = torch.where(torch.rand(ids.shape, generator=torch.Generator().manual_seed(4)) < 0.3, ids, -100)
    padded = {"input_ids": ids, "attention_mask": mask, "labels": labels,
              "masked_positions": torch.arange(1, 41).repeat(2, 1)}
    docs = documents([100, 20, 40])
    packed = torch.stack([torch.cat(docs), torch.cat(docs[::-1])])
    unpadded = {"input_ids": packed, "position_ids": packed_positions(packed), "labels": labels,
                "masked_positions": torch.arange(1, 41).repeat(2, 1)}
    for batch in (padded, unpadded):
        with HostSyncs() as syncs:
            loss, count = model(batch)
            (loss * count).backward()
        assert syncs.found == []
    with HostSyncs() as syncs, torch.no_grad():
        model.hf(input_ids=ids, attention_mask=mask)
    assert syncs.found  # the probe sees what the trunk avoids


def test_the_architecture_is_modernberts():
    """Pre-norm blocks (the first without an attention norm), GeGLU, no biases but the decoder's, LayerNorms
    without bias starting at 1, every third layer global; the rotary tables the trunk uses are cos and sin of
    position x 160,000^(-2i/d) in the global layers and 10,000^(-2i/d) in the local ones; the preset's rotary
    base reaches only the global layers."""
    model = tiny(dtype=torch.float64)
    config = model.hf.config
    assert config.layer_types == ["full_attention", "sliding_attention", "sliding_attention"]
    assert config.local_attention == 128 and config.sliding_window == 64 and config.hidden_activation == "gelu"
    assert config.classifier_pooling == "mean"  # as the released ModernBERT-base and -large
    assert model.hf.model.layers[1].mlp.Wi.out_features == 2 * config.intermediate_size  # GeGLU: input and gate
    assert isinstance(model.hf.model.layers[0].attn_norm, torch.nn.Identity)
    assert [name for name, _ in model.named_parameters() if name.endswith("bias")] == ["hf.decoder.bias"]
    norms = [m for m in model.hf.modules() if isinstance(m, torch.nn.LayerNorm)]
    assert len(norms) == 2 * 3 - 1 + 3 and all(bool((m.weight == 1).all()) for m in norms)  # + embedding, final, head
    assert model.hf.decoder.weight is model.hf.model.embeddings.tok_embeddings.weight
    positions = torch.arange(LENGTH)[None]
    hidden = torch.zeros(1, LENGTH, 8, dtype=torch.float64)
    dim = config.hidden_size // config.num_attention_heads
    for layer_type, theta in (("full_attention", 160000.0), ("sliding_attention", 10000.0)):
        cos, sin = rotary_tables(model.hf.model.rotary_emb, layer_type, hidden, positions)
        frequencies = theta ** (-torch.arange(0, dim, 2, dtype=torch.float64) / dim)
        angles = positions[0, :, None].double() * frequencies
        torch.testing.assert_close(cos[0], torch.cat([angles.cos()] * 2, -1), rtol=0, atol=1e-5)  # fp32 angles
        torch.testing.assert_close(sin[0], torch.cat([angles.sin()] * 2, -1), rtol=0, atol=1e-5)  # fp32 angles
    bases = tiny(rope_theta=80000.0).hf.config.rope_parameters
    assert bases["full_attention"]["rope_theta"] == 80000.0 and bases["sliding_attention"]["rope_theta"] == 10000.0


def test_local_layers_see_64_tokens_either_side_and_global_layers_all():
    """Changing one position's input to a block changes a local block's output within 64 positions of it and
    nowhere else; a global block's everywhere (fp64, SDPA and eager, with padding and without)."""
    for attention in ("sdpa", "eager"):
        model = tiny(torch.float64, attention=attention)
        hf = model.hf
        for mask in (None, padded_batch([LENGTH, 150])[1]):
            batch = 2 if mask is not None else 1
            hidden = torch.randn(batch, LENGTH, 64, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
            changed = hidden.clone()
            changed[:, 80] = torch.randn(64, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
            masks = encoder_masks(LENGTH, hf.config.sliding_window, mask, hidden.device, torch.float64)
            positions = torch.arange(LENGTH)[None]
            for layer in hf.model.layers:
                rotary = rotary_tables(hf.model.rotary_emb, layer.attention_type, hidden, positions)
                with torch.no_grad():
                    a, b = (layer(x, attention_mask=masks[layer.attention_type], position_embeddings=rotary)
                            for x in (hidden, changed))
                moved = ((a - b).abs().amax(-1) > 1e-12)[0]
                if layer.attention_type == "sliding_attention":
                    assert moved.nonzero().flatten().tolist() == list(range(80 - 64, 80 + 65)), attention
                else:
                    assert bool(moved.all()), attention


def test_flops_equal_pytorchs_count_of_the_matmuls():
    """Forward + backward of the trainer's loss (a padded batch, the predicted positions gathered): the FLOPs
    PyTorch's FlopCounterMode counts equal the family's formula. Eager attention, whose score and value
    matmuls the counter sees, over the full square (the local layers' masked scores are computed too)."""
    from torch.utils.flop_counter import FlopCounterMode

    model = tiny(lm_head="plain", attention="eager").train()
    ids, mask = padded_batch([96, 80], width=96)
    predictions = 20
    positions = torch.arange(1, predictions + 1).repeat(2, 1)
    labels = torch.where(torch.rand(ids.shape, generator=torch.Generator().manual_seed(3)) < 0.3, ids, -100)
    batch = {"input_ids": ids, "attention_mask": mask, "labels": labels, "masked_positions": positions}
    with FlopCounterMode(display=False) as counter:
        loss, _ = model(batch)
        loss.backward()
    counted = counter.get_total_flops()
    formula = model.family.flops(model.shape, 96, model.hf.config.vocab_size, ids.numel(), head_tokens=2 * predictions)
    assert counted == pytest.approx(formula, rel=1e-9), (counted, formula)


def test_init_from_a_transformers_folder_gives_its_logits(tmp_path):
    """A ModernBertForMaskedLM made by transformers (its own random init, a 32-token window, every second layer
    global, rotary bases 50,000 and 5,000) continues with its own logits and shape; a tokenizer larger than its
    embedding grows it and leaves the logits of the existing tokens unchanged."""
    from transformers import ModernBertConfig, ModernBertForMaskedLM

    config = ModernBertConfig(vocab_size=280, hidden_size=48, intermediate_size=80, num_hidden_layers=4,
                              num_attention_heads=6, max_position_embeddings=256, local_attention=32,
                              layer_types=["full_attention", "sliding_attention"] * 2, pad_token_id=0,
                              cls_token_id=2, sep_token_id=3, bos_token_id=2, eos_token_id=3,
                              rope_parameters={"full_attention": {"rope_type": "default", "rope_theta": 50000.0},
                                               "sliding_attention": {"rope_type": "default", "rope_theta": 5000.0}})
    torch.manual_seed(7)
    theirs = ModernBertForMaskedLM(config).eval()
    with torch.no_grad():  # sharper attention than at initialization: positions (window, bases) matter more
        for layer in theirs.model.layers:
            layer.attn.Wqkv.weight.mul_(8.0)
    theirs.save_pretrained(tmp_path / "released")
    ids, mask = padded_batch([80, 50], width=80, seed=8)
    ids = ids.clamp(max=279)
    with torch.no_grad():
        want = theirs(input_ids=ids, attention_mask=mask).logits
    real = mask.bool()
    for vocab in (280, VOCAB):  # the same rows; more tokens than rows
        ours = build_model(ModelConfig(preset="modernbert-tiny", init_from=str(tmp_path / "released"),
                                       vocab_multiple=8), vocab, SPECIALS, sentence_order=False, seed=1,
                           ds_config=None).eval()
        assert ours.hf.config.vocab_size == (280 if vocab == 280 else 304)
        assert (ours.shape.hidden, ours.shape.layers, ours.shape.ffn_hidden, ours.shape.rope_theta) == (48, 4, 80, 50000.0)
        got = trainer_logits(ours, ids, mask)
        torch.testing.assert_close(got[real][:, :280], want[real], rtol=1e-5, atol=1e-5)


def test_config_defaults_and_misuse():
    """data.mask_prob defaults to the family's (ModernBERT 30%, BERT 15%), written into the config; sentence-order
    prediction is refused for ModernBERT; packed documents (the default) and its rotary base are accepted."""
    assert Config(model=ModelConfig(preset="modernbert-base")).data.mask_prob == 0.3
    assert Config(model=ModelConfig(preset="bert-base")).data.mask_prob == 0.15 and Config().data.mask_prob == 0.15
    assert "mask_prob: 0.3" in Config(model=ModelConfig(preset="modernbert-tiny")).to_yaml()
    assert load_config("modernbert_tiny", ["data.mask_prob=0.2"]).data.mask_prob == 0.2
    assert load_config("tiny_mlm", ["model.preset=modernbert-tiny"]).data.mask_prob == 0.15  # set in tiny_mlm.yaml
    with pytest.raises(ConfigError) as err:
        validate(load_config("modernbert_tiny", ["data.sentence_order_prediction=true", "data.document_mask=true",
                                                 "model.rope_theta=20000"]), 1)
    problems = "\n".join(err.value.problems)
    assert "data.sentence_order_prediction: modernbert-tiny (modernbert) has no sentence-order head" in problems
    assert "document_mask" not in problems and "rope_theta" not in problems  # packed documents: unpadded batches
    assert Config(model=ModelConfig(preset="modernbert-base")).data.document_mask is True
    with pytest.raises(ValueError, match="no sentence-order head"):
        get_family("modernbert").model_class(sentence_order=True)

