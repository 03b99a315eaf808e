"""A newcomer's path: the flow finds its flowconfig.toml from any folder, and the tests and the
demo keep their runs in their own folder, whatever ``.metaflow`` lies higher up."""

import os
import shutil
import subprocess
import sys

import pytest
from configs import local_metaflow_home
from conftest import REPO, s3_config

from flowproject.testing import sensor_env


def run_flow(flow_file, cwd, env, *args):
    return subprocess.run(
        [sys.executable, str(flow_file)] + list(args),
        cwd=str(cwd),
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def flow_and_another_folder(tmp_path, bucket="my-ml-data"):
    """``(flows, elsewhere)``: a copy of sensorflow.py with its flowconfig.toml (watching
    ``data.csv`` in ``bucket``; no card: no test of it reads one, and an announcing run draws
    it in a process of its own) in ``tmp_path/flows``, and an empty folder to run it from."""
    flows, elsewhere = tmp_path / "flows", tmp_path / "elsewhere"
    flows.mkdir()
    elsewhere.mkdir()
    shutil.copy(os.path.join(REPO, "sensorflow.py"), flows)
    config = s3_config(bucket, "data.csv", "etag", extra_sensor="card = false")
    (flows / "flowconfig.toml").write_text(config)
    return flows, elsewhere


def test_the_flow_reads_the_flowconfig_next_to_it_from_another_folder(tmp_path):
    flows, elsewhere = flow_and_another_folder(tmp_path)
    env = sensor_env(workdir=str(tmp_path), user="tester")
    env["PYTHONPATH"] = REPO + os.pathsep + env.get("PYTHONPATH", "")
    result = run_flow(flows / "sensorflow.py", elsewhere, env, "show")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Step start" in result.stdout + result.stderr


def test_without_a_flowconfig_next_to_the_flow_the_error_names_the_path_tried(tmp_path):
    flows = tmp_path / "flows"
    flows.mkdir()
    shutil.copy(os.path.join(REPO, "sensorflow.py"), flows)
    env = sensor_env(workdir=str(tmp_path), user="tester")
    env["PYTHONPATH"] = REPO + os.pathsep + env.get("PYTHONPATH", "")
    result = run_flow(flows / "sensorflow.py", tmp_path, env, "show")
    assert result.returncode != 0
    assert str(flows / "flowconfig.toml") in result.stdout + result.stderr


@pytest.mark.e2e
def test_a_run_from_another_folder_uses_the_flowconfig_next_to_the_flow_and_no_stray_metaflow(
    tmp_path, s3_server, s3_client, bucket, webhook
):
    """One run shows both (each was a run of its own): the flow reads the flowconfig.toml next
    to it when started from another folder, and a run with the tests' environment keeps its runs
    in its own folder, whatever ``.metaflow`` lies higher up."""
    flows, elsewhere = flow_and_another_folder(tmp_path, bucket)
    # What pytest's folders (or a laptop's home) may hold: a .metaflow above the test's folder,
    # here above the flow file too (the nearest one, without the tests' environment).
    stray = tmp_path / ".metaflow"
    stray.mkdir()
    # Present data: the first check publishes (issue 9, item 8).
    s3_client.put_object(Bucket=bucket, Key="data.csv", Body=b"a,b\n1,2\n")
    env = sensor_env(
        s3_server.endpoint_url,
        webhook.url,
        local_metaflow_home(tmp_path / "metaflow-home"),  # only the plugins a local run uses
        user="tester",
        workdir=str(elsewhere),
    )
    env["PYTHONPATH"] = REPO + os.pathsep + env.get("PYTHONPATH", "")
    result = run_flow(flows / "sensorflow.py", elsewhere, env, "run")
    assert result.returncode == 0, result.stdout + result.stderr
    (event,) = webhook.events
    # The project name and the watched object are the flowconfig.toml's next to the flow.
    assert event["name"] == "mfns.testproject.user.tester.data_updated"
    assert event["payload"]["state"] == "present"
    assert os.listdir(stray) == []
    assert os.path.isdir(elsewhere / ".metaflow" / "SensorFlow")


# The demo never uses a stray .metaflow above its folder: test_demo.py (its S3 part plants one).
