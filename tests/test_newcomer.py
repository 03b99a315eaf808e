"""A newcomer's path: the flow finds its flowconfig.toml from any folder, and the tests and the
demo keep their runs in their own folder, whatever ``.metaflow`` lies higher up."""

import os
import shutil
import subprocess
import sys

import pytest
from conftest import REPO, FlowRunner, s3_config

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
    ``data.csv`` in ``bucket``) in ``tmp_path/flows``, and an empty folder to run it from."""
    flows, elsewhere = tmp_path / "flows", tmp_path / "elsewhere"
    flows.mkdir()
    elsewhere.mkdir()
    shutil.copy(os.path.join(REPO, "sensorflow.py"), flows)
    (flows / "flowconfig.toml").write_text(s3_config(bucket, "data.csv", "etag"))
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
def test_a_run_from_another_folder_uses_the_flowconfig_next_to_the_flow(
    tmp_path, s3_server, s3_client, bucket, webhook
):
    flows, elsewhere = flow_and_another_folder(tmp_path, bucket)
    s3_client.put_object(Bucket=bucket, Key="data.csv", Body=b"a,b")
    env = sensor_env(s3_server.endpoint_url, webhook.url, user="tester", workdir=str(elsewhere))
    env["PYTHONPATH"] = REPO + os.pathsep + env.get("PYTHONPATH", "")
    result = run_flow(flows / "sensorflow.py", elsewhere, env, "run")
    assert result.returncode == 0, result.stdout + result.stderr
    (event,) = webhook.events
    assert event["name"] == "mfns.testproject.user.tester.data_updated"
    assert event["payload"]["state"] == "present"


@pytest.mark.e2e
def test_flow_runs_never_use_a_stray_metaflow_in_a_parent_folder(
    tmp_path, s3_server, s3_client, bucket, webhook
):
    # What pytest's folders (or a laptop's home) may hold: a .metaflow above the test's folder.
    stray = tmp_path / ".metaflow"
    stray.mkdir()
    workdir = tmp_path / "test-folder"
    workdir.mkdir()
    env = sensor_env(s3_server.endpoint_url, webhook.url, user="tester", workdir=str(workdir))
    env["PYTHONPATH"] = REPO + os.pathsep + env.get("PYTHONPATH", "")
    runner = FlowRunner(workdir, env)
    runner.write_config(s3_config(bucket, "data.csv", "etag"))
    # Present data: a first check that finds nothing publishes nothing (issue 9, item 8).
    s3_client.put_object(Bucket=bucket, Key="data.csv", Body=b"a,b\n1,2\n")
    result = runner.run()
    assert result.returncode == 0, result.stdout + result.stderr
    assert len(webhook.events) == 1
    assert os.listdir(stray) == []
    assert os.path.isdir(workdir / ".metaflow" / "SensorFlow")


# The demo never uses a stray .metaflow above its folder: test_demo.py (its S3 part plants one).
