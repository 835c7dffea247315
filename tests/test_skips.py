"""The suite's own rule for skips: on a developer's machine a test that cannot run here skips and says why in
the summary scripts/test.sh prints at the end; in CI (CI=true, set by .ci/run) the same skip is a failure."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.conftest import ROOT

A_TEST_THAT_NEEDS_A_CLUSTER = f"""
import sys
sys.path.insert(0, {str(ROOT)!r})
from tests.conftest import skip_outside_ci

def test_on_the_cluster():
    skip_outside_ci("no cluster on this machine")
"""


@pytest.mark.parametrize("ci", [None, "true"])
def test_a_skip_is_reported_with_its_reason_and_fails_in_ci(tmp_path, ci):
    (tmp_path / "test_cluster.py").write_text(A_TEST_THAT_NEEDS_A_CLUSTER)
    env = {k: v for k, v in os.environ.items() if k not in ("CI", "PRETRAIN_REQUIRE_SHARED")}
    if ci:
        env["CI"] = ci
    done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider", "test_cluster.py"],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    if ci:
        assert done.returncode == 1 and "1 failed" in done.stdout, done.stdout
        assert "no cluster on this machine, but CI must run this test" in done.stdout
    else:
        assert done.returncode == 0 and "1 skipped" in done.stdout, done.stdout
        assert any(line.startswith("SKIPPED [1] ") and line.endswith(": no cluster on this machine")
                   for line in done.stdout.splitlines()), done.stdout


def test_the_readme_command_lists_the_skips_and_ci_sets_ci():
    script = (ROOT / "scripts" / "test.sh").read_text()
    # -rs: every skip and its reason in the final summary; the whole suite unless the arguments name test files
    assert 'python -m pytest -q -rs "${targets[@]}"' in script and "targets=(tests)" in script
    assert "export CI=true" in (ROOT / ".ci" / "run").read_text()
