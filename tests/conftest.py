"""Shared fixtures: paths to the real corpora and tokenizer in ../shared, small corpus slices."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("PRETRAIN_SHARED", ROOT.parent / "shared"))
CORPORA = SHARED / "corpora"
SHARED_BPE = SHARED / "tokenizers" / "multilingual-bpe"

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def require_shared() -> None:
    """Skip when ../shared is absent, unless PRETRAIN_REQUIRE_SHARED=1 (CI), where it must exist."""
    if not CORPORA.exists():
        if os.environ.get("PRETRAIN_REQUIRE_SHARED") == "1":
            pytest.fail(f"{CORPORA} is missing but PRETRAIN_REQUIRE_SHARED=1")
        pytest.skip(f"real corpora not found at {CORPORA}")


@pytest.fixture(scope="session")
def shared_bpe() -> Path:
    require_shared()
    return SHARED_BPE


@pytest.fixture(scope="session")
def corpus_files() -> dict[str, Path]:
    """The real Korean and German jsonl.zst files by language-source name."""
    require_shared()
    return {p.name.split(".jsonl")[0]: p for p in sorted(CORPORA.glob("*.jsonl.zst"))}


def read_documents(path: Path, limit: int | None = None) -> list[str]:
    import zstandard

    texts = []
    with zstandard.open(path, "rt", encoding="utf-8") as handle:
        for line in handle:
            texts.append(json.loads(line)["text"])
            if limit and len(texts) >= limit:
                break
    return texts


@pytest.fixture(scope="session")
def small_corpus(tmp_path_factory, corpus_files) -> Path:
    """A plain jsonl of ~400 real documents: Korean help pages, German help pages and quotations."""
    out = tmp_path_factory.mktemp("corpus") / "mixed.jsonl"
    with open(out, "w", encoding="utf-8") as handle:
        for name, limit in (("ko.libreoffice-help-ko", 150), ("de.libreoffice-help-de", 100), ("de.fortunes-de", 150)):
            for text in read_documents(corpus_files[name], limit):
                handle.write(json.dumps({"text": text, "source": name}, ensure_ascii=False) + "\n")
    return out


def run_tool(tool: str, *args: str, check: bool = True, **kwargs) -> subprocess.CompletedProcess:
    """Run tools/<tool>.py as a user would; returns the completed process (text output)."""
    proc = subprocess.run([sys.executable, str(ROOT / "tools" / f"{tool}.py"), *map(str, args)],
                          capture_output=True, text=True, **kwargs)
    if check and proc.returncode != 0:
        raise AssertionError(f"{tool} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc
