"""pretrain-eval's refusals: what it cannot score is named with the way on (exit 2, no traceback): a model or
input that is missing, a damaged or half-written checkpoint, a masked LM's tokenizer without its special tokens,
and data made by another tokenizer, whether its ids fall past the model's tokenizer or within it."""

from __future__ import annotations

import shutil

import numpy as np

from pretrain.tokenization import load_tokenizer
from tests.conftest import write_jsonl
from tests.distributed import preprocess
from tests.eval_models import evaluate, exit_code


def test_clear_errors(gpt2_folder, documents_file, tokenizer_dir, tmp_path, capsys):
    code, err = exit_code(capsys, tmp_path / "nope", "--input", documents_file)
    assert code == 2 and "nope does not exist" in err and "Hugging Face model folder" in err
    code, err = exit_code(capsys, tokenizer_dir, "--input", documents_file)
    assert code == 2 and "is not a model" in err and "config.json" in err
    code, err = exit_code(capsys, gpt2_folder, "--input", tmp_path / "missing.jsonl")
    assert code == 2 and "missing.jsonl" in err and "no such file" in err
    (tmp_path / "half.bin").write_bytes(b"")
    code, err = exit_code(capsys, gpt2_folder, "--input", tmp_path / "half.bin")
    assert code == 2 and "half.idx does not exist" in err
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "ok"}\n{"text": \n')
    code, err = exit_code(capsys, gpt2_folder, "--input", bad)
    assert code == 2 and "bad.jsonl:2" in err


def test_a_masked_lm_with_a_tokenizer_that_names_no_mask_is_refused(llama3_style_tokenizer, documents_file, tmp_path,
                                                                    capsys):
    """A causal LM's tokenizer (no [CLS], [SEP] or mask) beside a masked LM: the roles scoring would have to add
    fall within the model's padded rows, so only the tokenizer says they are not the model's."""
    from transformers import BertConfig, BertForMaskedLM

    tokenizer = load_tokenizer(llama3_style_tokenizer)
    BertForMaskedLM(BertConfig(vocab_size=tokenizer.vocab_size + 60, hidden_size=32, num_hidden_layers=1,
                               num_attention_heads=2, intermediate_size=64)).save_pretrained(tmp_path / "bert")
    tokenizer.save(tmp_path / "bert")
    code, err = exit_code(capsys, tmp_path / "bert", "--input", documents_file)
    assert code == 2 and "has no cls token the model knows (the folder names none)" in err


def test_a_prefix_with_ids_past_the_tokenizer_is_refused_within_the_models_rows(tokenizer_dir, tmp_path, capsys):
    """A model's embedding padded past its tokenizer (as every export is) has rows that stand for no token: data
    holding those ids (made with another tokenizer, or by a version that added special tokens) is refused, not
    scored with their bytes missing."""
    from transformers import GPT2Config, GPT2LMHeadModel

    from pretrain.data.indexed import IndexedDatasetWriter

    tokenizer = load_tokenizer(tokenizer_dir)
    size = tokenizer.vocab_size
    GPT2LMHeadModel(GPT2Config(vocab_size=size + 40, n_positions=32, n_embd=16, n_layer=1, n_head=2)).save_pretrained(
        tmp_path / "gpt2")
    tokenizer.save(tmp_path / "gpt2")
    with IndexedDatasetWriter(str(tmp_path / "old"), np.uint16) as writer:
        for document in ([5, 6, 7, tokenizer.specials.eod], [8, size + 3, 9, tokenizer.specials.eod]):
            writer.add_document([document])
        writer.finalize()
    code, err = exit_code(capsys, tmp_path / "gpt2", "--input", tmp_path / "old")
    assert code == 2 and f"document 1 holds token id {size + 3}, but the model and its tokenizer know only {size}" in err


def test_a_checkpoint_that_cannot_be_scored_says_why(modernbert_run, documents_file, tmp_path, capsys):
    """A run dir whose checkpoint is damaged, or a checkpoint the run died while saving, is named as such with the
    way on: not called "not a model"."""
    from pretrain import manifest

    run = tmp_path / "run"
    shutil.copytree(modernbert_run["run"], run)
    step = run / "checkpoints" / "step00000001"
    manifest.write(step, manifest.describe(step, manifest.files_of(step)))
    with open(step / "mp_rank_00_model_states.pt", "r+b") as states:  # one byte flipped
        states.seek(100)
        byte = states.read(1)
        states.seek(100)
        states.write(bytes([byte[0] ^ 1]))
    for model in (run, step):
        code, err = exit_code(capsys, model, "--input", documents_file, "--work-dir", tmp_path)
        assert code == 2 and f"{step} is damaged" in err and "Pass an earlier checkpoint's folder" in err, err
        assert "not a model" not in err
    (step / "COMPLETE").unlink()
    code, err = exit_code(capsys, step, "--input", documents_file)
    assert code == 2 and "is incomplete (no COMPLETE marker)" in err and "not a model" not in err, err
    code, err = exit_code(capsys, run, "--input", documents_file)  # the run's only checkpoint: none complete
    assert code == 2 and f"{run} holds no complete checkpoint yet" in err and "not a model" not in err, err


def test_a_prefix_made_by_another_tokenizer_is_refused(llama_folder, llama3_style_tokenizer, tokenizer_dir,
                                                       documents_file, tmp_path, capsys):
    """Its ids all fall within the model's vocabulary. The tokenizer recorded with the data is another: refused.
    Without a record (Megatron's data), every document ends with a token that is not the model's end of text and
    never occurs inside them, and they do not encode back to their ids with the model's tokenizer: refused.
    Documents of the model's own tokenizer that all end alike (one question each, no --append-eod) are scored."""
    import os

    from pretrain.data.indexed import meta_path

    preprocess(documents_file, tokenizer_dir, tmp_path / "other", "--append-eod")
    assert load_tokenizer(tokenizer_dir).vocab_size < load_tokenizer(llama_folder).vocab_size
    code, err = exit_code(capsys, llama_folder, "--input", tmp_path / "other_text_document")
    assert code == 2 and "was preprocessed with another tokenizer than the model's tokenizer" in err, err
    assert f"made with {tokenizer_dir}" in err and "Traceback" not in err
    os.remove(meta_path(tmp_path / "other_text_document"))
    code, err = exit_code(capsys, llama_folder, "--input", tmp_path / "other_text_document")
    assert code == 2 and "the data was made with --append-eod by another tokenizer" in err, err
    assert "every document ends with token id" in err and "Traceback" not in err
    questions = write_jsonl(tmp_path / "questions.jsonl", [f"Wie alt ist Nummer {i}?" for i in range(50)])
    preprocess(questions, llama3_style_tokenizer, tmp_path / "questions")
    report = evaluate(llama_folder, "--input", tmp_path / "questions_text_document", "--output", tmp_path / "q.json")
    assert report["total"]["documents"] == 50


def test_a_run_dirs_refusal_names_the_runs_tokenizer(modernbert_run, llama3_style_tokenizer, documents_file, tmp_path,
                                                     capsys):
    """A run dir is scored through a temporary export: the fix names the run's tokenizer, not that folder."""
    preprocess(documents_file, llama3_style_tokenizer, tmp_path / "other", "--append-eod")
    code, err = exit_code(capsys, modernbert_run["run"], "--input", tmp_path / "other_text_document")
    assert code == 2 and f"preprocess the data again with {modernbert_run['run'] / 'tokenizer'}." in err, err
