"""Token ids past the tokenizer: the data check names them (a special token that versions before 2026-12 added),
every dataset stops at the sample that holds one, and the preflight reads the tokenizer as the trainer will."""

from __future__ import annotations

import numpy as np
import pytest

from pretrain.data.gpt_dataset import GPTDataset, build_gpt_indices, samples_per_epoch
from pretrain.data.masking import MaskingSpec
from pretrain.data.mlm_dataset import MLMDataset, build_mlm_indices
from tests.test_datasets import make_dataset


def test_ids_past_the_tokenizer_are_named_and_never_trained(tmp_path, llama3_style_tokenizer, caplog):
    """Data preprocessed when every load added all six roles may hold, where the text had a literal <s>, the id
    that load gave it: the data check names the token and both fixes. Any id past the tokenizer stops the run at
    the sample that holds it (the check reads only part of the data), in the causal LM's and both masked LMs'
    datasets, never an index error or a padding row trained silently; the message says the same."""
    from pretrain.config import DataConfig
    from pretrain.data.builder import check_datasets
    from pretrain.data.indexed import DataFileError
    from pretrain.data.packed_mlm import PackedMLMDataset, wrapped_lengths
    from pretrain.data.vocabulary import VocabularyBound
    from pretrain.tokenization import load_tokenizer
    from pretrain.tokenization.specials import ROLES

    tokenizer = load_tokenizer(llama3_style_tokenizer)
    rows, eod = tokenizer.vocab_size, tokenizer.specials.eod
    old_s = load_tokenizer(llama3_style_tokenizer, ROLES).specials.ids["cls"]  # "<s>", as loads before 2026-12 added it
    bound = VocabularyBound(rows, str(llama3_style_tokenizer))
    specials = {"cls": eod - 1, "sep": eod, "pad": eod, "mask": eod - 2}
    masking = MaskingSpec(specials["mask"], 0.15, False, np.ones(rows, dtype=bool), np.arange(300, 900))
    rng = np.random.default_rng(5)
    texts = [[*rng.integers(300, 900, rng.integers(5, 40)).tolist(), eod] for _ in range(60)]
    for stray, named in ((old_s, "'<s>', a special token that this project added"), (rows + 40, "another tokenizer")):
        docs = [list(t) for t in texts]
        docs[33][2] = stray
        indexed = make_dataset(tmp_path, [[doc] for doc in docs], f"stray{stray}")
        caplog.clear()
        (problem,) = check_datasets(DataConfig(tokenizer=str(llama3_style_tokenizer), prefixes=[str(indexed.prefix)]),
                                    tokenizer, "clm")
        assert f"holds token id {stray}" in problem and named in problem
        assert "lacked special tokens" not in caplog.text  # the diagnosis loads all roles without a word
        if stray == old_s:
            assert "Preprocess the data again" in problem and "RUN_DIR/tokenizer" in problem
        lengths = indexed.document_lengths()
        every = samples_per_epoch(int(lengths.sum()), 16)
        whole = range(indexed.num_documents)
        datasets = {
            "clm": GPTDataset(indexed, build_gpt_indices(lengths, 0, 1, 16, seed=1), 16, every, vocabulary=bound),
            "mlm": MLMDataset(indexed, build_mlm_indices(indexed, whole, 60, 16, 0.0, seed=1), 16, specials, masking,
                              False, 1, 60, bound),
            "packed mlm": PackedMLMDataset(indexed, build_gpt_indices(wrapped_lengths(indexed, whole, eod), 0, 1, 16, 1),
                                           16, specials, masking, 1, every, eod, bound),
        }
        for name, dataset in datasets.items():
            with pytest.raises(DataFileError, match=f"sample [0-9]+ holds token id {stray}, past the {rows} tokens") as met:
                for i in range(len(dataset)):
                    dataset[i]
            assert named in str(met.value), name
    broken = tmp_path / "broken"  # the folder changed under the run: the general cause, never another error
    (broken / "tokenizer_config.json").mkdir(parents=True)
    for source in (broken, "some-org/some-model"):  # nor a wait on the hub from a data loader worker
        assert "another tokenizer" in VocabularyBound(rows, str(source)).cause(rows + 1)


def test_the_preflight_reads_the_tokenizer_as_the_trainer_will(tmp_path, llama3_style_tokenizer):
    """A RUN_DIR/tokenizer with more roles than the family's but no checkpoint (a failed first launch of an older
    version, checkpoints moved away): the trainer loads data.tokenizer with its family's roles alone, and so does
    the preflight, which refuses data holding ids those lack, instead of passing it to stop at the sample hours
    later. With a checkpoint, both take the run's saved roles."""
    from pretrain.checkpoint import COMPLETE, tag_for
    from pretrain.cli.train import preflight
    from pretrain.config import ConfigError, load_config
    from pretrain.tokenization import load_tokenizer
    from pretrain.tokenization.specials import ROLES

    tokenizer = load_tokenizer(llama3_style_tokenizer)
    eod, old_s = tokenizer.specials.eod, load_tokenizer(llama3_style_tokenizer, ROLES).specials.ids["cls"]
    docs = [[[*range(300, 300 + k), eod]] for k in range(5, 60)]
    docs[20][0][2] = old_s
    indexed = make_dataset(tmp_path, docs, "old")
    run = tmp_path / "run"
    load_tokenizer(llama3_style_tokenizer, ROLES).save(run / "tokenizer")
    config = load_config("tiny_llama", [f"data.tokenizer={llama3_style_tokenizer}", f"data.prefixes=[{indexed.prefix}]",
                                        f"run.dir={run}"])
    with pytest.raises(ConfigError, match=f"holds token id {old_s}"):
        preflight(config)
    (run / "checkpoints" / tag_for(3)).mkdir(parents=True)
    (run / "checkpoints" / tag_for(3) / COMPLETE).touch()
    preflight(config)  # a resumed launch: the roles its run saved, which know the id
