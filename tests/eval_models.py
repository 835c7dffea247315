"""What pretrain-eval's tests score with (tests/test_eval.py, tests/test_eval_refusals.py): their documents, and the
command run in this process. The models (tiny GPT-2 and Llama folders as pretrain-export writes them, a ModernBERT
run dir as the trainer leaves one) are fixtures in tests/conftest.py."""

from __future__ import annotations

import importlib.util
import json

import pytest

from tests.conftest import grown_documents, skip_outside_ci

# documents of ~60-250 tokens for windows of 48: most need several windows; a short one and an empty one
DOCUMENTS = [*grown_documents(4)[-4:], "짧다.", ""]


def require_lm_eval() -> None:
    if importlib.util.find_spec("lm_eval") is None:
        skip_outside_ci("lm-evaluation-harness is not installed (pip install -e '.[test]' installs lm_eval)")


def evaluate(*args) -> dict:
    """pretrain-eval in this process; its JSON report."""
    from pretrain.cli.eval import main

    out = args[args.index("--output") + 1]
    assert main([str(a) for a in args]) == 0
    with open(out, encoding="utf-8") as handle:
        return json.load(handle)


def exit_code(capsys, *args) -> tuple[int, str]:
    """pretrain-eval as the command runs it (exit code and error message), in this process."""
    from pretrain.cli.eval import main
    from pretrain.cli.runner import run

    with pytest.raises(SystemExit) as done:
        run(lambda: main([str(a) for a in args]))
    return done.value.code, capsys.readouterr().err
