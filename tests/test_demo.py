"""The demo's S3 part shows the whole loop: sensor -> event -> triggered StarterFlow run."""

import os
import re
import subprocess
import sys

import pytest
from conftest import REPO

pytestmark = pytest.mark.e2e


def run_demo_part(tmp_path, part):
    """``python -m demo --only <part>`` as a user runs it, with no AWS or datastore settings.

    Its temporary working folder has a stray ``.metaflow`` above it (``tmp_path/tmp/.metaflow``),
    as pytest's folders or a laptop's home may: the demo must never use it."""
    (tmp_path / "tmp" / ".metaflow").mkdir(parents=True)
    env = dict(os.environ, METAFLOW_USER="tester", METAFLOW_HOME=str(tmp_path / "home"))
    env["TMPDIR"] = str(tmp_path / "tmp")
    env = {k: v for k, v in env.items() if not k.startswith(("AWS_", "METAFLOW_DATASTORE"))}
    return subprocess.run(
        [sys.executable, "-m", "demo", "--only", part],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_demo_shows_each_triggered_run_with_the_value_it_trained_on(tmp_path):
    proc = run_demo_part(tmp_path, "s3")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = proc.stdout
    announced = re.findall(r"event \S+ \(change_id=\w+, data_version=(sha256:\w+)\)", out)
    trained = re.findall(r"StarterFlow/\d+ trained on data_version = (sha256:\w+)", out)
    assert len(announced) == 2 and announced[0] != announced[1]
    assert trained == announced
    assert "no event" in out
    # Moved from test_newcomer.py (one demo run instead of two): the demo's own runs kept
    # their .metaflow in its folder, not in the stray one above it.
    assert "event, no event, event with the new value" in out
    assert os.listdir(tmp_path / "tmp" / ".metaflow") == []


def test_demo_many_sources_part_starts_the_two_source_flow_once_both_announced(tmp_path):
    proc = run_demo_part(tmp_path, "sources")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = proc.stdout
    assert "TwoSourceFlow waits for orders_updated (events_updated received)" in out
    assert len(re.findall(r"TwoSourceFlow/\d+ trained on orders = sha256:", out)) == 2
    assert "sources:  both sources, events only, orders only" in out
