"""pretrain: train tokenizers, preprocess corpora, and pretrain GPT-2 / BERT with DeepSpeed ZeRO-3."""

from setuptools import find_packages, setup

setup(
    name="pretrain",
    version="0.1.0",
    description=__doc__,
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    packages=find_packages(include=["pretrain", "pretrain.*"]),
    package_data={"pretrain": ["configs/*.yaml", "ds_configs/*.json", "recipes/*.yaml", "demo/corpus/*.txt"]},
    # torch comes first and separately (see scripts/setup_env.sh): a bare "torch" requirement on a
    # machine without it pulls a multi-GB CUDA build.
    install_requires=[
        "torch>=2.4",
        "deepspeed>=0.16",
        "transformers>=5.0",
        "tokenizers>=0.21",
        "datasets>=3.0",
        "sentencepiece>=0.2",
        "protobuf>=4",
        "numpy>=1.26",
        "pyarrow>=15",
        "zstandard>=0.22",
        "pyyaml>=6",
        "tensorboard>=2.15",
        "safetensors>=0.4",
        "orjson>=3.9",  # JSONL parsing in preprocessing workers, 3x json
        "mwparserfromhell>=0.6",  # wikitext of Wikipedia dumps
        "ijson>=3.2",  # Namuwiki's one-array dump, streamed
        "datasketch>=1.6",  # MinHash near-duplicate removal
        "xxhash>=3.0",  # checkpoint manifests' checksums
        "matplotlib>=3.7",  # run plots
    ],
    extras_require={
        "mpi": ["mpi4py>=3.1"],
        "wandb": ["wandb>=0.17"],
        "ko": ["mecab-ko>=1.0.3"],  # Korean morphemes for tokenizer training (--morphemes ko)
        "test": ["pytest>=8", "hypothesis>=6", "megatron-core>=0.12", "ruff>=0.6", "accelerate>=1.0", "wandb>=0.17",
                 "mecab-ko>=1.0.3",
                 "lm_eval>=0.4.5"],  # pretrain-eval's bits per byte checked against lm-evaluation-harness's
    },
    entry_points={
        "console_scripts": [
            "pretrain-train=pretrain.cli.train:cli",
            "pretrain-train-tokenizer=pretrain.cli.train_tokenizer:cli",
            "pretrain-tokenizer-report=pretrain.cli.tokenizer_report:cli",
            "pretrain-preprocess=pretrain.cli.preprocess_data:cli",
            "pretrain-clean=pretrain.cli.clean_corpus:cli",
            "pretrain-merge-datasets=pretrain.cli.merge_datasets:cli",
            "pretrain-inspect-dataset=pretrain.cli.inspect_dataset:cli",
            "pretrain-export=pretrain.cli.export_hf:cli",
            "pretrain-eval=pretrain.cli.eval:cli",
            "pretrain-plan=pretrain.cli.plan:cli",
            "pretrain-plot-runs=pretrain.cli.plot_runs:cli",
            "pretrain-inspect-checkpoint=pretrain.cli.inspect_checkpoint:cli",
            "pretrain-pipeline=pretrain.cli.pipeline:cli",
        ],
    },
)
