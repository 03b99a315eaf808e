"""The Argo Events Sensor of a triggered flow: compiled by ``./deploy --dry-run``, validated
against the Argo Events schema, and matched with what ``flowproject dev`` delivers.

Uses the session's throwaway git repository, loopback S3 datastore and compile
(tests/deployment.py).
"""

import json
import os
import shutil

import pytest
from deployment import (
    CONFIG,
    FEATURE_BRANCH,
    FEATURE_MF_BRANCH,
    PROJECT,
    _git,
    _ok,
    load_sensor,
    run_deploy,
    schema_errors,
)
from test_multi_trigger import EXAMPLE, two_source_config

from flowproject.argo_sensor import trigger_rules
from flowproject.devloop import DevLoop

BRANCHES = [("main", None, "prod"), ("feature", FEATURE_BRANCH, "test." + FEATURE_MF_BRANCH)]
KEY = CONFIG["sensor"]["payload_key"]


def expected_rules(mf_branch):
    """The one expectation: the event of the branch, the payload key to the Parameter."""
    return [
        {
            "event": "mfns.%s.%s.%s" % (PROJECT, mf_branch, CONFIG["sensor"]["event_name"]),
            # The payload key, and what @sensor_trigger adds: the change id and manifest.
            "parameters": {
                KEY: KEY,
                "sensor_change_id": "change_id",
                "sensor_changes_url": "changes_url",
            },
            "required": [],  # the Parameter has a default: an absent key keeps it
        }
    ]


@pytest.mark.e2e
@pytest.mark.parametrize("label, mf_branch", [(b[0], b[2]) for b in BRANCHES])
def test_compiled_sensor_validates_and_maps_the_branch_event_to_the_parameter(
    compiled, sensor_schema, label, mf_branch
):
    proc, out = compiled[label]
    _ok(proc)
    sensor = load_sensor(out)
    errors = schema_errors(sensor_schema, sensor)
    assert errors == [], "\n".join(errors[:20])
    assert sensor["kind"] == "Sensor"
    # The schema forbids no unknown keys: assert the fields that decide what starts.
    (dependency,) = sensor["spec"]["dependencies"]
    event = expected_rules(mf_branch)[0]["event"]
    assert {
        "expr": "name == '%s'" % event,
        "fields": [{"name": "name", "path": "body.payload.name"}],
    } in dependency["filters"]["exprs"]
    (trigger,) = sensor["spec"]["triggers"]
    mapped = [
        p
        for p in trigger["template"]["k8s"]["parameters"]
        if 'hasKey $.Input.body.payload "%s"' % KEY in (p["src"].get("dataTemplate") or "")
    ]
    (parameter,) = mapped
    assert parameter["src"]["dependencyName"] == dependency["name"]
    assert parameter["dest"] == "spec.arguments.parameters.#(name=%s).value" % KEY
    # The untriggered sensor flow gets no Sensor file.
    assert not os.path.exists(os.path.join(str(out), "sensorflow.sensor.json"))


@pytest.mark.e2e
@pytest.mark.parametrize("label, mf_branch", [(b[0], b[2]) for b in BRANCHES])
def test_dev_loop_and_compiled_sensor_agree(compiled, git_repo, tmp_path, label, mf_branch):
    proc, out = compiled[label]
    _ok(proc)
    expectation = expected_rules(mf_branch)
    assert trigger_rules(load_sensor(out)) == expectation

    env = dict(os.environ, METAFLOW_USER="tester", METAFLOW_HOME=str(tmp_path / "home"))
    where = dict(env=env, log_dir=str(tmp_path), cwd=str(tmp_path))
    if label == "main":
        loop = DevLoop(root=str(git_repo), production=True, **where)
    else:
        loop = DevLoop(root=str(git_repo), branch=FEATURE_MF_BRANCH, **where)
    flows = loop.discover()
    assert list(flows) == ["starterflow.py"]
    assert flows["starterflow.py"]["rules"] == expectation


@pytest.fixture(scope="module")
def two_source_sensor(git_repo, deploy_env, tmp_path_factory):
    """``./deploy --dry-run --flow two_source_flow.py`` on main, with two [sources.<name>]."""
    repo = tmp_path_factory.mktemp("two-source") / "repo"
    shutil.copytree(str(git_repo), str(repo))
    (repo / "flowconfig.toml").write_text(two_source_config(project=PROJECT))
    shutil.copy(EXAMPLE, str(repo / "two_source_flow.py"))
    _git(repo, "add", "-A")
    _git(repo, "commit", "-q", "-m", "a flow waiting for two sources")
    out = tmp_path_factory.mktemp("two-source-out")
    args = ("--dry-run", "--out", str(out), "--flow", "two_source_flow.py")
    args += ("--flow", "sensorflow.py")
    return run_deploy(repo, deploy_env, *args), out


@pytest.mark.e2e
def test_a_two_source_flow_compiles_one_sensor_requiring_both_events(
    two_source_sensor, sensor_schema
):
    proc, out = two_source_sensor
    _ok(proc)
    with open(os.path.join(str(out), "two_source_flow.sensor.json")) as f:
        sensor = json.load(f)
    errors = schema_errors(sensor_schema, sensor)
    assert errors == [], "\n".join(errors[:20])
    # One trigger, no conditions: Argo Events then waits for every dependency.
    (trigger,) = sensor["spec"]["triggers"]
    assert "conditions" not in trigger["template"]
    dependencies = sensor["spec"]["dependencies"]
    assert len(dependencies) == 2
    event_of = {}
    for dependency in dependencies:
        (name_filter,) = [
            e
            for e in dependency["filters"]["exprs"]
            if e["fields"][0]["path"] == "body.payload.name"
        ]
        event_of[dependency["name"]] = name_filter["expr"]
    mapped = {}
    for parameter in trigger["template"]["k8s"]["parameters"]:
        for key in ("orders_version", "events_version"):
            if 'hasKey $.Input.body.payload "%s"' % key in (
                parameter["src"].get("dataTemplate") or ""
            ):
                assert parameter["dest"] == "spec.arguments.parameters.#(name=%s).value" % key
                mapped[key] = event_of[parameter["src"]["dependencyName"]]
    orders, events = ("mfns.%s.prod.%s_updated" % (PROJECT, s) for s in ("orders", "events"))
    assert mapped == {
        "orders_version": "name == '%s'" % orders,
        "events_version": "name == '%s'" % events,
    }

    def mapping(source):
        return {
            "%s_version" % source: "%s_version" % source,
            "%s_change_id" % source: "change_id",
            "%s_changes_url" % source: "changes_url",
        }

    assert trigger_rules(sensor) == [
        {"event": events, "parameters": mapping("events"), "required": []},
        {"event": orders, "parameters": mapping("orders"), "required": []},
    ]
    assert (
        "compiled Argo Events Sensor: starts when each has arrived since its last start: "
        "%s (events_change_id <- change_id, events_changes_url <- changes_url, events_version "
        "<- events_version) AND %s (orders_change_id <- change_id, orders_changes_url <- "
        "changes_url, orders_version <- orders_version)" % (events, orders)
    ) in proc.stdout


@pytest.mark.e2e
def test_the_multi_source_sensor_compiles_to_a_valid_template(
    two_source_sensor, workflow_template_schema
):
    """SensorFlow with two [sources.<name>]: one WorkflowTemplate, valid for Argo, whose start
    step checks both sources (one deployment, not one per source)."""
    proc, out = two_source_sensor
    _ok(proc)
    with open(os.path.join(str(out), "sensorflow.json")) as f:
        template = json.load(f)
    errors = schema_errors(workflow_template_schema, template)
    assert errors == [], "\n".join(errors[:20])
    assert template["metadata"]["annotations"]["metaflow/flow_name"] == "SensorFlow"
    (dag,) = [t["dag"] for t in template["spec"]["templates"] if t.get("dag")]
    assert sorted(task["name"] for task in dag["tasks"]) == ["announce-change", "end", "start"]
