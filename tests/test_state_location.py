"""Where a local run keeps its state (issue 20 #4): by the flow file, whatever the current
folder, so a run started from another folder never re-announces old data as a first check."""

import os
import subprocess
import sys

import pytest
from configs import local_metaflow_home
from conftest import REPO, accept_current_value, use_loopback_s3
from test_newcomer import flow_and_another_folder

from flowproject.environment import flow_file_of_main, local_datastore_parent
from flowproject.testing import sensor_env


def test_only_a_flow_file_run_as_a_script_counts_as_a_flow_run(tmp_path):
    class Main(object):
        __spec__ = None

    flow = tmp_path / "myflow.py"
    flow.write_text("from flowproject import BaseFlow\n\nclass MyFlow(BaseFlow):\n    pass\n")
    tool = tmp_path / "tool.py"
    tool.write_text("import flowproject\nprint(flowproject.BaseFlow)\n")
    main = Main()
    main.__file__ = str(flow)
    assert flow_file_of_main(main) == str(flow)
    main.__file__ = str(tool)
    assert flow_file_of_main(main) is None  # a script that only uses flowproject
    main.__spec__ = object()  # python -m something
    main.__file__ = str(flow)
    assert flow_file_of_main(main) is None


def test_the_datastore_is_the_nearest_metaflow_above_the_flow_else_next_to_it(tmp_path):
    flows = tmp_path / "project" / "flows"
    flows.mkdir(parents=True)
    flow = flows / "sensorflow.py"
    assert local_datastore_parent(str(flow)) in (str(flows), _above(tmp_path))
    (tmp_path / "project" / ".metaflow").mkdir()
    assert local_datastore_parent(str(flow)) == str(tmp_path / "project")


def _above(path):
    """The folder holding a .metaflow above ``path`` on this machine, if any."""
    folder = str(path)
    while os.path.dirname(folder) != folder:
        folder = os.path.dirname(folder)
        if os.path.isdir(os.path.join(folder, ".metaflow")):
            return folder
    return None


@pytest.mark.e2e
def test_a_run_from_another_folder_uses_the_state_next_to_the_flow(
    tmp_path, s3_server, s3_client, bucket, webhook, monkeypatch
):
    flows, elsewhere = flow_and_another_folder(tmp_path, bucket)
    s3_client.put_object(Bucket=bucket, Key="data.csv", Body=b"a,b")
    # No METAFLOW_DATASTORE_SYSROOT_LOCAL: where the state lives is the flow's choice.
    home = local_metaflow_home(tmp_path / "home")  # only the plugins a local run uses
    env = sensor_env(s3_server.endpoint_url, webhook.url, home, user="tester")
    for name in ("METAFLOW_DATASTORE_SYSROOT_LOCAL", "METAFLOW_CARD_LOCALROOT"):
        env.pop(name, None)
    env["PYTHONPATH"] = REPO + os.pathsep + env.get("PYTHONPATH", "")
    datastore = os.path.join(local_datastore_parent(str(flows / "sensorflow.py")), ".metaflow")

    def run(cwd, flow_file):
        argv = [sys.executable, flow_file, "run"]
        proc = subprocess.run(argv, cwd=str(cwd), env=env, capture_output=True, text=True)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        return proc.stdout + proc.stderr

    # What a first run from the flow's own folder leaves (its baseline, in the datastore next
    # to the flow), set as `flowproject reset --to-current` does, in this process; a flow's
    # first check announcing is every e2e file's.
    use_loopback_s3(monkeypatch, s3_server.endpoint_url)
    config = (flows / "flowconfig.toml").read_text()
    accept_current_value(os.path.dirname(datastore), config, "user.tester")
    out = run(elsewhere, os.path.join("..", "flows", "sensorflow.py"))
    assert webhook.events == [], out  # the run saw the state next to the flow
    assert "unchanged since the last announcement" in out
    assert not os.path.exists(elsewhere / ".metaflow")
    # The log names the state by its absolute location.
    state = os.path.join(datastore, "SensorFlow", "sensor_state")
    assert state in out, out
