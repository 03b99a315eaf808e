"""StarterFlow runs locally like any flow, with its Parameter named by [sensor] payload_key."""

import pytest
from conftest import s3_config
from metaflow import step

from flowproject import BaseFlow
from flowproject.triggers import payload_key_flow_problems


class AssigningFlow(BaseFlow):
    """Never run: its source is read for the artifacts it assigns."""

    @step
    def start(self):
        self.pair, (self.nested, _) = 1, (2, 3)
        self.total += 1
        self.typed: int = 4
        self.next(self.end)

    @step
    def end(self):
        pass


# A run with the default payload key, data_version, as its Parameter (twice, never skipped):
# test_downstream.py::test_a_run_started_by_hand_is_never_skipped.


def test_the_parameter_name_follows_the_config(flow_runner, bucket):
    config = s3_config(bucket, "events/", "files_metadata").replace(
        'payload_key = "data_version"', 'payload_key = "snapshot"'
    )
    flow_runner.write_config(config + '[trigger]\nparameter_default = "latest"\n')
    proc = flow_runner.run("--snapshot", "2024-06-01", flow="starterflow.py")
    assert proc.returncode == 0, proc.stderr
    assert "Training on snapshot = '2024-06-01'" in proc.stdout

    # No value given: the [trigger] default, e.g. for a run started by hand.
    proc = flow_runner.run(flow="starterflow.py")
    assert proc.returncode == 0, proc.stderr
    assert "Training on snapshot = 'latest'" in proc.stdout


def starter_rejecting(flow_runner, payload_key):
    """The output of ``starterflow.py run`` with ``[sensor] payload_key = payload_key``, which
    must stop the flow loading: a config error, before any task starts."""
    flow_runner.write_config(
        s3_config("some-bucket", "events/", "files_metadata").replace(
            'payload_key = "data_version"', 'payload_key = "%s"' % payload_key
        )
    )
    proc = flow_runner.run(flow="starterflow.py")
    output = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert "Invalid flowconfig.toml" in output
    assert "Task is starting" not in output
    return output


def test_payload_key_taken_by_the_flow_stops_it_loading(flow_runner):
    """One name StarterFlow takes, through the real flow: the others (a step, an attribute, an
    artifact of start) are the same check, test_payload_key_flow_problems's, in-process."""
    output = starter_rejecting(flow_runner, "model")
    headline = "sensor.payload_key: 'model' cannot be a Parameter of StarterFlow: "
    assert headline + "step 'train' sets self.model, and a Parameter cannot be assigned" in output


@pytest.mark.parametrize(
    "payload_key, expected",
    [
        ("pair", "step 'start' sets self.pair"),
        ("nested", "step 'start' sets self.nested"),
        ("total", "step 'start' sets self.total"),
        ("typed", "step 'start' sets self.typed"),
        ("observation", "method '_single_source_views' sets self.observation"),  # BaseFlow's
        ("end", "it is a step of the flow"),
        ("check_sources", "it is an attribute of the flow"),
        ("flowconfig", "it is an attribute of the flow"),  # BaseFlow's Config
    ],
)
def test_payload_key_flow_problems(payload_key, expected):
    (problem,) = payload_key_flow_problems(AssigningFlow, payload_key, ["start", "end"])
    assert problem == (
        "sensor.payload_key: %r cannot be a Parameter of AssigningFlow: %s"
        % (payload_key, expected)
        + ("" if "self." not in expected else ", and a Parameter cannot be assigned")
        + "; choose another name"
    )
    assert payload_key_flow_problems(AssigningFlow, "data_version", ["start", "end"]) == []
