"""The set-up scripts a newcomer runs first: shellcheck-clean, and safe to source."""

import hashlib
import os
import shutil
import subprocess
import sys

import pytest
from conftest import REPO

SCRIPTS = ["scripts/setup", "scripts/test", "scripts/demo", ".ci/run", "deploy"]


def test_scripts_are_shellcheck_clean():
    shellcheck = shutil.which("shellcheck") or os.path.join(
        os.path.dirname(sys.executable), "shellcheck"
    )
    if not os.path.exists(shellcheck):
        pytest.skip("shellcheck is not installed (pip install -e '.[dev]' brings it)")
    result = subprocess.run([shellcheck, "-x"] + SCRIPTS, cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_sourcing_setup_keeps_the_shell_options_and_puts_the_venv_on_path(tmp_path):
    # A venv that scripts/setup takes as already installed: its python, and the stamp of
    # pyproject.toml + constraints.txt, so nothing is installed by this test.
    venv = tmp_path / "venv"
    (venv / "bin").mkdir(parents=True)
    os.symlink(sys.executable, venv / "bin" / "python")
    content = b"".join(
        open(os.path.join(REPO, name), "rb").read()
        for name in ("pyproject.toml", "constraints.txt")
    )
    (venv / ".flowproject-installed").write_text(hashlib.sha256(content).hexdigest() + "\n")
    script = (
        'echo "before=$-"; source scripts/setup; echo "status=$?"; '
        'echo "after=$-"; echo "path=$PATH"'
    )
    env = dict(os.environ, FLOWPROJECT_VENV=str(venv), PYTHON=sys.executable)
    env.pop("METAFLOW_USER", None)
    result = subprocess.run(
        ["bash", "-c", script], cwd=REPO, env=env, capture_output=True, text=True
    )
    lines = dict(line.split("=", 1) for line in result.stdout.splitlines() if "=" in line)
    assert lines["status"] == "0", result.stdout + result.stderr
    assert lines["after"] == lines["before"]  # no set -e/-u/pipefail left in the caller's shell
    assert lines["path"].split(":")[0] == str(venv / "bin")
    assert "Installing" not in result.stdout
