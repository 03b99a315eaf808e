"""The set-up scripts a newcomer runs first: shellcheck-clean, and safe to source."""

import glob
import hashlib
import os
import shutil
import subprocess
import sys

import pytest
from conftest import REPO
from deployment import CLUSTER_SETTINGS

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


def fake_python(path, body):
    """An executable ``python`` that runs ``body`` (bash) and otherwise the real interpreter."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text('#!/usr/bin/env bash\n%s\nexec "%s" "$@"\n' % (body, sys.executable))
    path.chmod(0o755)
    return path


def run_setup(tmp_path, python=sys.executable, sourced=False, installer="pip"):
    """``scripts/setup`` run as a script (or sourced) with its venv in ``tmp_path/venv``."""
    venv = tmp_path / "venv"
    script = "source scripts/setup; echo status=$?" if sourced else "scripts/setup"
    env = dict(
        os.environ, FLOWPROJECT_VENV=str(venv), PYTHON=str(python), FLOWPROJECT_INSTALLER=installer
    )
    result = subprocess.run(
        ["bash", "-c", script], cwd=REPO, env=env, capture_output=True, text=True, timeout=120
    )
    return result, venv


@pytest.mark.parametrize(
    "sourced, installer",
    [(False, "pip"), (True, "pip"), (False, "uv")],
    ids=["run", "sourced", "uv"],
)
def test_a_failed_install_fails_setup_shows_pips_error_and_writes_no_stamp(
    tmp_path, sourced, installer
):
    # The venv's python is real except for pip, which fails like a resolver error (with uv,
    # pip installing uv fails).
    fake_python(
        tmp_path / "venv" / "bin" / "python",
        'if [ "$1 $2" = "-m pip" ]; then\n'
        '    echo "ERROR: No matching distribution found for fakesnow==0.12.1" >&2\n'
        "    exit 1\n"
        "fi",
    )
    result, venv = run_setup(tmp_path, sourced=sourced, installer=installer)
    if sourced:
        assert "status=1" in result.stdout, result.stdout + result.stderr
    else:
        assert result.returncode != 0, result.stdout + result.stderr
    assert "No matching distribution found for fakesnow==0.12.1" in result.stderr
    assert "installing into %s failed (%s's error is above)" % (venv, installer) in result.stderr
    assert not (venv / ".flowproject-installed").exists()


def test_an_unknown_installer_is_named_before_anything_is_created(tmp_path):
    result, venv = run_setup(tmp_path, installer="conda")
    assert result.returncode != 0
    assert "FLOWPROJECT_INSTALLER must be pip or uv, not 'conda'" in result.stderr
    assert not venv.exists()


def test_setup_on_python_3_10_says_the_demo_and_tests_need_3_11(tmp_path):
    # A Python that reports 3.10 (the real interpreter, with sys.version_info replaced).
    python = fake_python(
        tmp_path / "py310" / "python",
        'if [ "$1" = "-c" ]; then\n'
        '    exec "%s" -c "import sys; sys.version_info = (3, 10, 13, \'final\', 0); '
        'code = sys.argv.pop(1); exec(code)" "${@:2}"\n'
        "fi" % sys.executable,
    )
    result, venv = run_setup(tmp_path, python=python)
    assert result.returncode != 0
    assert "Python 3.10" in result.stderr
    assert "the demo and the tests need Python 3.11+" in result.stderr
    assert "fakesnow 0.12.1" in result.stderr
    assert not venv.exists()  # stopped before creating a venv or running pip


def python_3_10():
    """A working Python 3.10 interpreter (``$FLOWPROJECT_PY310``, python3.10, pyenv's), or None."""
    candidates = [os.environ.get("FLOWPROJECT_PY310"), shutil.which("python3.10")]
    candidates += sorted(
        glob.glob(os.path.expanduser("~/.pyenv/versions/3.10*/bin/python3.10")), reverse=True
    )
    for candidate in filter(None, candidates):
        probe = subprocess.run(
            [candidate, "-c", "import sys, venv; print(sys.version_info[:2] == (3, 10))"],
            capture_output=True,
            text=True,
        )
        if probe.returncode == 0 and probe.stdout.strip() == "True":
            return candidate
    return None


def test_the_runtime_installs_runs_and_deploys_on_python_3_10(tmp_path, request):
    # Downloads the runtime's dependencies from PyPI (a minute or two): opt-in, not in CI.
    if os.environ.get("FLOWPROJECT_TEST_PY310") != "1":
        pytest.skip("set FLOWPROJECT_TEST_PY310=1 to install the runtime on Python 3.10 (PyPI)")
    python = python_3_10()
    if python is None:
        pytest.skip("no Python 3.10 interpreter here (set FLOWPROJECT_PY310 to one)")
    venv = tmp_path / "venv310"
    subprocess.run([python, "-m", "venv", str(venv)], check=True)
    venv_python = str(venv / "bin" / "python")
    # The runtime alone: no dev extras and no constraints.txt (its pins need 3.11); deploy
    # also needs the kubernetes client, which Metaflow's Argo Workflows support imports.
    install = subprocess.run(
        [venv_python, "-m", "pip", "install", "--quiet", REPO, "kubernetes<37"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert install.returncode == 0, install.stdout + install.stderr
    # The flow loads and validates the repository's flowconfig.toml, from another folder.
    env = dict(os.environ, METAFLOW_USER="tester", METAFLOW_DATASTORE_SYSROOT_LOCAL=str(tmp_path))
    show = subprocess.run(
        [venv_python, os.path.join(REPO, "sensorflow.py"), "show"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=env,
    )
    assert show.returncode == 0, show.stdout + show.stderr
    assert "Step start" in show.stdout + show.stderr
    # deploy --dry-run compiles every flow with this interpreter (S3 datastore on loopback).
    moto_server = request.getfixturevalue("moto_server")
    moto_server.client().create_bucket(Bucket="deploy-py310")
    env = {k: v for k, v in env.items() if not k.startswith(("METAFLOW_", "AWS_"))}
    env.update(
        PYTHON=venv_python,
        METAFLOW_USER="tester",
        METAFLOW_HOME=str(tmp_path / "metaflow-home"),
        METAFLOW_DEFAULT_DATASTORE="s3",
        METAFLOW_DATASTORE_SYSROOT_S3="s3://deploy-py310/metaflow",
        METAFLOW_S3_ENDPOINT_URL=moto_server.endpoint_url,
        AWS_ACCESS_KEY_ID="testing",
        AWS_SECRET_ACCESS_KEY="testing",
        AWS_DEFAULT_REGION="us-east-1",
        **CLUSTER_SETTINGS,
    )
    out = tmp_path / "deploy-out"
    deploy = subprocess.run(
        ["bash", os.path.join(REPO, "deploy"), "--dry-run", "--out", str(out)]
        + ["--git-branch", "main"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=env,
    )
    assert deploy.returncode == 0, deploy.stdout + deploy.stderr
    assert (out / "sensorflow.json").exists() and (out / "starterflow.json").exists()
