"""./deploy --dry-run on a throwaway git repository, checked without a cluster.

The repository's files are copied into a temporary git repository; ``./deploy --dry-run`` runs
there on ``main`` and on a feature branch, with a loopback S3 server as Metaflow's datastore
(the code package is uploaded even for ``--only-json``) and the Kubernetes and Argo Events
settings a real deployment has. Each flow is compiled once per branch and test session
(tests/deployment.py).
"""

import hashlib
import json
import os
import shutil
import subprocess
import sys
import textwrap
from http.server import BaseHTTPRequestHandler

import pytest
from configs import local_metaflow_home
from conftest import s3_config
from deployment import (
    BIN,
    CONFIG,
    DATASTORE_BUCKET,
    EVENT,
    FEATURE_MF_BRANCH,
    PROJECT,
    REPO,
    _git,
    _ok,
    flow_files,
    load_templates,
    run_deploy,
    schema_errors,
)

from flowproject.deploy_support import branch_name, delete_state, flow_name, project_args
from flowproject.testing import LoopbackHTTPServer


def _tool(name):
    """A console script of the dev extra, next to this Python or on PATH."""
    path = os.path.join(BIN, name)
    if os.path.exists(path):
        return path
    found = shutil.which(name)
    if not found:
        pytest.fail("%s is not installed: pip install -e '.[dev]'" % name)
    return found


def _argo_name(project_flow_name):
    """The Kubernetes name Metaflow gives a short @project workflow ('_' dropped, lowercase)."""
    from metaflow.plugins.argo.argo_workflows_cli import sanitize_for_argo

    return sanitize_for_argo(project_flow_name)


# ---------------------------------------------------------------------------------- branches


@pytest.mark.parametrize(
    "git_branch, expected",
    [
        ("feature/New-Model", "feature_new_model_46cd65"),
        ("refs/heads/fix_42", "fix_42"),  # valid as it is: no hash
        ("dependabot/pip/boto3-1.35.0", "dependabot_pip_boto3_1_35_0_fa8bb2"),
        ("--Weird..Name__", "weird_name_ba2b35"),
        ("x" * 80, "x" * 33 + "_d929cd"),
        ("x" * 40, "x" * 40),
        ("x" * 41, "x" * 33 + "_" + hashlib.sha256(b"x" * 41).hexdigest()[:6]),
    ],
)
def test_branch_name_is_valid_for_metaflow_and_kubernetes(git_branch, expected):
    from metaflow.plugins.project_decorator import format_name

    name = branch_name(git_branch)
    assert name == expected
    assert len(name) <= 40
    # Metaflow's own check of --branch raises on anything it does not accept.
    assert format_name("F", PROJECT, False, name, "u")[1] == "test." + name


@pytest.mark.parametrize(
    "first, second",
    [
        ("feature/Model-A", "feature/model_a"),
        ("feature/model-a", "feature/model_a"),
        ("model_a", "Model_A"),
        ("release/" + "a" * 40 + "-one", "release/" + "a" * 40 + "-two"),
        ("y" * 40 + "1", "y" * 40 + "2"),
    ],
)
def test_different_git_branches_never_share_a_metaflow_branch(first, second):
    assert branch_name(first) != branch_name(second)
    # Stable: the same git branch always deploys to the same place.
    assert branch_name(first) == branch_name(first)


@pytest.mark.parametrize(
    "git_branch, expected",
    [
        ("main", ["--production"]),
        ("master", ["--production"]),
        ("refs/heads/main", ["--production"]),
        ("Main", ["--branch", "main_eb814b"]),
        ("feature/Model-A", ["--branch", "feature_model_a_dce9b4"]),
    ],
)
def test_project_args(git_branch, expected):
    assert project_args(git_branch) == expected


def test_branch_name_rejects_a_name_with_nothing_left():
    with pytest.raises(ValueError):
        branch_name("///")


# ---------------------------------------------------------------------------------- dry run


def test_dry_run_on_main_compiles_production_templates(compiled):
    proc, out = compiled["main"]
    _ok(proc)
    assert "namespace prod" in proc.stdout
    for flow, template in load_templates(out).items():
        flow_name = template["metadata"]["annotations"]["metaflow/flow_name"]
        assert template["kind"] == "WorkflowTemplate"
        assert template["metadata"]["name"] == _argo_name("%s.prod.%s" % (PROJECT, flow_name))
        assert template["metadata"]["annotations"]["metaflow/branch_name"] == "prod"
        assert template["metadata"]["namespace"] == "jobs-default"
        assert flow in proc.stdout


def test_dry_run_on_a_feature_branch_compiles_branch_templates(compiled):
    proc, out = compiled["feature"]
    _ok(proc)
    assert "--branch %s" % FEATURE_MF_BRANCH in proc.stdout
    for template in load_templates(out).values():
        annotations = template["metadata"]["annotations"]
        branch = "test." + FEATURE_MF_BRANCH
        assert annotations["metaflow/branch_name"] == branch
        assert annotations["metaflow/project_name"] == PROJECT
        assert template["metadata"]["name"] == _argo_name(
            "%s.%s.%s" % (PROJECT, branch, annotations["metaflow/flow_name"])
        )
        assert FEATURE_MF_BRANCH.replace("_", "") in template["metadata"]["name"]


@pytest.mark.parametrize("label", ["main", "feature"])
def test_sensor_cron_is_flowconfigs(compiled, label):
    proc, out = compiled[label]
    _ok(proc)
    templates = load_templates(out)
    cron = json.loads(templates["sensorflow.py"]["metadata"]["annotations"]["metaflow/cron"])
    assert cron["schedule"] == CONFIG["sensor"]["cron_schedule"]
    # The starter flow runs on the sensor's event, not on a clock.
    assert "metaflow/cron" not in templates["starterflow.py"]["metadata"]["annotations"]


@pytest.mark.parametrize(
    "label, branch", [("main", "prod"), ("feature", "test." + FEATURE_MF_BRANCH)]
)
def test_starter_flow_listens_to_the_namespaced_event_of_its_branch(compiled, label, branch):
    from metaflow.plugins.namespaced_events import _make_namespaced_event_name

    proc, out = compiled[label]
    _ok(proc)
    annotations = load_templates(out)["starterflow.py"]["metadata"]["annotations"]
    expected = "mfns.%s.%s.%s" % (PROJECT, branch, EVENT)
    # The same function the sensor's namespaced_event_name() uses when it publishes.
    assert _make_namespaced_event_name(EVENT, PROJECT, branch) == expected
    assert json.loads(annotations["metaflow/triggers"]) == [{"name": expected, "type": "event"}]
    payload_key = CONFIG["sensor"]["payload_key"]
    assert payload_key in json.loads(annotations["metaflow/parameters"])


@pytest.mark.parametrize("label", ["main", "feature"])
def test_templates_validate_against_the_argo_schema(compiled, workflow_template_schema, label):
    proc, out = compiled[label]
    _ok(proc)
    for flow, template in load_templates(out).items():
        errors = schema_errors(workflow_template_schema, template)
        assert errors == [], "%s does not validate:\n%s" % (flow, "\n".join(errors[:20]))


def test_the_sensor_compiles_with_its_conditional_announcing_step(compiled):
    # start switches to announce-change or straight to end; end runs after either branch.
    proc, out = compiled["main"]
    _ok(proc)
    template = load_templates(out)["sensorflow.py"]
    (dag,) = [t["dag"] for t in template["spec"]["templates"] if t.get("dag")]
    tasks = {task["name"]: task for task in dag["tasks"]}
    assert {"start", "announce-change", "end"} <= set(tasks)
    assert tasks["announce-change"].get("when"), tasks["announce-change"]
    depends = tasks["end"].get("depends", "")
    assert "start" in depends and "announce-change" in depends, tasks["end"]


def test_a_bad_flow_fails_deploy_by_name_and_the_others_still_report(
    git_repo, deploy_env, tmp_path
):
    _git(git_repo, "checkout", "-q", "-b", "broken")
    try:
        # Same flows, but this one reads a config with a 6-field (AWS-style) cron.
        (git_repo / "bad.toml").write_text(
            (git_repo / "flowconfig.toml")
            .read_text()
            .replace(CONFIG["sensor"]["cron_schedule"], "0 10 * * ? *")
        )
        (git_repo / "badflow.py").write_text(
            textwrap.dedent(
                """\
                from metaflow import Config, config_expr, project, step

                from flowproject import BaseFlow
                from flowproject.config import parse_flowconfig


                @project(name=config_expr("flowconfig.project_name"))
                class BadFlow(BaseFlow):
                    flowconfig = Config("flowconfig", default="bad.toml", parser=parse_flowconfig)

                    @step
                    def start(self):
                        self.next(self.end)

                    @step
                    def end(self):
                        pass


                if __name__ == "__main__":
                    BadFlow()
                """
            )
        )
        _git(git_repo, "add", "-A")
        _git(git_repo, "commit", "-q", "-m", "a flow with a bad config")
        proc = run_deploy(
            git_repo,
            deploy_env,
            "--dry-run",
            "--out",
            str(tmp_path),
            "--flow",
            "badflow.py",
            "--flow",
            "sensor*",
        )
    finally:
        _git(git_repo, "checkout", "-q", "main")
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "FAILED: badflow.py" in proc.stderr
    assert "sensor.cron_schedule" in proc.stdout  # the config error, shown from the log
    assert "starterflow.py" not in proc.stdout  # filtered out
    summary = proc.stdout.split("Summary")[1]
    assert "flowproject.test.broken.sensorflow" in summary
    assert (tmp_path / "sensorflow.json").exists()
    assert not (tmp_path / "badflow.json").exists()


@pytest.mark.parametrize(
    "github_env, expected",
    [
        (
            {"GITHUB_HEAD_REF": "feature/PR-7", "GITHUB_REF_NAME": "7/merge"},
            "test.feature_pr_7_aaffef",
        ),
        ({"GITHUB_REF_NAME": "refs/heads/main"}, "prod"),
        ({"GITHUB_REF_NAME": "main"}, "prod"),
    ],
)
def test_detached_head_takes_the_branch_from_github(git_repo, deploy_env, github_env, expected):
    _git(git_repo, "checkout", "-q", "--detach")
    try:
        # No flow matches: the branch is decided and reported, nothing is compiled.
        proc = run_deploy(git_repo, deploy_env, "--dry-run", "--flow", "nothing*", env=github_env)
    finally:
        _git(git_repo, "checkout", "-q", "main")
    assert proc.returncode == 2
    assert "(namespace %s)" % expected in proc.stdout
    assert "no flow file" in proc.stderr


@pytest.mark.parametrize(
    "git_branch, other",
    [("feature_x_217d2b", "feature/x"), ("x" * 33 + "_d929cd", "x" * 80)],
)
def test_a_branch_named_like_anothers_hashed_name_deploys_elsewhere(
    git_repo, deploy_env, git_branch, other
):
    """issue 18 #5: ./deploy (through deploy_support) maps the two to two namespaces."""
    namespaces = []
    for name in (git_branch, other):
        # No flow matches: the branch is decided and reported, nothing is compiled.
        proc = run_deploy(
            git_repo, deploy_env, "--dry-run", "--flow", "nothing*", "--git-branch", name
        )
        assert proc.returncode == 2 and "no flow file" in proc.stderr
        namespaces.append(proc.stdout.split("(namespace ")[1].split(")")[0])
    assert namespaces[1] == "test." + git_branch  # the other branch's Metaflow name
    assert namespaces[0] == "test." + branch_name(git_branch) != namespaces[1]


def test_detached_head_without_github_names_fails_plainly(git_repo, deploy_env):
    _git(git_repo, "checkout", "-q", "--detach")
    try:
        proc = run_deploy(git_repo, deploy_env, "--dry-run")
    finally:
        _git(git_repo, "checkout", "-q", "main")
    assert proc.returncode == 2
    assert "--git-branch" in proc.stderr


def test_help(git_repo, deploy_env):
    proc = run_deploy(git_repo, deploy_env, "--help")
    assert proc.returncode == 0
    assert "--dry-run" in proc.stdout and "--flow" in proc.stdout


def test_plain_event_names_when_namespaced_events_is_false(git_repo, deploy_env, tmp_path):
    """--config flowconfig PATH reaches the trigger too; no deploy script needed here."""
    env, ensure_bucket = deploy_env
    ensure_bucket()
    config = tmp_path / "plain.toml"
    config.write_text(
        (git_repo / "flowconfig.toml")
        .read_text()
        .replace("namespaced_events = true", "namespaced_events = false")
        .replace('payload_key = "data_version"', 'payload_key = "snapshot"')
    )
    proc = subprocess.run(
        [
            sys.executable,
            "starterflow.py",
            "--config",
            "flowconfig",
            str(config),
            "--branch",
            "plain",
            "argo-workflows",
            "create",
            "--only-json",
        ],
        cwd=git_repo,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    annotations = json.loads(proc.stdout)["metadata"]["annotations"]
    assert json.loads(annotations["metaflow/triggers"]) == [{"name": EVENT, "type": "event"}]
    # The payload key, and the change id and manifest @sensor_trigger maps next to it.
    assert set(json.loads(annotations["metaflow/parameters"])) == {
        "snapshot",
        "sensor_change_id",
        "sensor_changes_url",
    }


# ---------------------------------------------------------------------------------- teardown

TEARDOWN_BRANCH = "feature/Model-A"
TEARDOWN_MF_BRANCH = "test.feature_model_a_dce9b4"


def _state_key(flow_name, branch, project=PROJECT):
    return "metaflow/%s/sensor_state/%s/%s.json" % (flow_name, project, branch)


@pytest.fixture
def stored_states(deploy_env, moto_server):
    """Sensor state objects in the S3 datastore: the torn-down branch's and others'."""
    _, ensure_bucket = deploy_env
    ensure_bucket()
    client = moto_server.client()
    keys = {
        "gone": [
            _state_key("SensorFlow", TEARDOWN_MF_BRANCH),
            _state_key("OldSensorFlow", TEARDOWN_MF_BRANCH),  # a flow since removed
        ],
        "kept": [
            # feature/model_a: sanitised alike, but another branch.
            _state_key("SensorFlow", "test." + branch_name("feature/model_a")),
            _state_key("SensorFlow", "prod"),
            _state_key("SensorFlow", TEARDOWN_MF_BRANCH, project="otherproject"),
        ],
    }
    for key in keys["gone"] + keys["kept"]:
        client.put_object(Bucket=DATASTORE_BUCKET, Key=key, Body=b"{}")
    yield keys
    for key in keys["gone"] + keys["kept"]:
        client.delete_object(Bucket=DATASTORE_BUCKET, Key=key)


def _exists(moto_server, key):
    listed = moto_server.client().list_objects_v2(Bucket=DATASTORE_BUCKET, Prefix=key)
    return any(o["Key"] == key for o in listed.get("Contents", []))


def _is_reset_marker(moto_server, key):
    """The object at ``key`` is a reset marker: no baseline, no history, ``reset`` set."""
    body = moto_server.client().get_object(Bucket=DATASTORE_BUCKET, Key=key)["Body"].read()
    doc = json.loads(body)
    reset = doc.get("reset") or {}
    return reset.get("by") == "deploy --teardown" and not doc["baseline"] and not doc["history"]


def test_teardown_dry_run_says_what_it_would_delete(
    git_repo, deploy_env, moto_server, stored_states
):
    proc = run_deploy(git_repo, deploy_env, "--teardown", TEARDOWN_BRANCH, "--dry-run")
    _ok(proc)
    assert "(namespace %s)" % TEARDOWN_MF_BRANCH in proc.stdout
    for flow in flow_files():
        assert (
            "would run: %s %s --branch feature_model_a_dce9b4 argo-workflows delete"
            % (sys.executable, flow)
            in proc.stdout
        )
    for key in stored_states["gone"]:
        assert "would delete sensor state %s" % key[len("metaflow/") :] in proc.stdout
    for key in stored_states["kept"]:
        assert key[len("metaflow/") :] not in proc.stdout
    assert "would delete 2 object(s)" in proc.stdout.split("Summary")[1]
    # Nothing deleted.
    for key in stored_states["gone"] + stored_states["kept"]:
        assert _exists(moto_server, key)


def test_teardown_refuses_production(git_repo, deploy_env):
    for branch in ["main", "refs/heads/master"]:
        proc = run_deploy(git_repo, deploy_env, "--teardown", branch, "--dry-run")
        assert proc.returncode == 2
        assert "refusing to tear down production" in proc.stderr


def test_delete_state_removes_only_that_branchs_objects_on_s3(
    git_repo, deploy_env, moto_server, stored_states
):
    """The command ./deploy --teardown runs, against the S3 datastore."""
    env, _ = deploy_env
    proc = subprocess.run(
        [sys.executable, "-m", "flowproject.deploy_support", "delete-state", TEARDOWN_MF_BRANCH],
        cwd=git_repo,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    for key in stored_states["gone"]:
        assert "deleted sensor state %s" % key[len("metaflow/") :] in proc.stdout
        # A marker in its place: a missing state would be rebuilt from the branch's runs.
        assert _is_reset_marker(moto_server, key)
    for key in stored_states["kept"]:
        assert not _is_reset_marker(moto_server, key)


def test_delete_state_on_the_local_datastore(tmp_path):
    from metaflow.plugins.datastores.local_storage import LocalStorage

    from flowproject.state import state_path

    storage = LocalStorage(str(tmp_path))
    gone = state_path("SensorFlow", PROJECT, "test.x")
    kept = state_path("SensorFlow", PROJECT, "test.y")
    stored = '{"baseline": null, "history": [{"kind": "first"}]}'
    for path in (gone, kept):
        (tmp_path / path).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / path).write_text(stored)
        (tmp_path / (path + ".lock")).write_text("")

    assert delete_state(PROJECT, "test.x", storage=storage, dry_run=True) == [gone]
    assert (tmp_path / gone).read_text() == stored
    assert delete_state(PROJECT, "test.x", storage=storage) == [gone]
    # A reset marker replaces the state (a re-created branch starts with a first check), and
    # the local backend's lock file goes.
    marker = json.loads((tmp_path / gone).read_text())
    assert marker["baseline"] is None and marker["history"] == []
    assert marker["reset"]["by"] == "deploy --teardown"
    assert not (tmp_path / (gone + ".lock")).exists()
    assert (tmp_path / kept).read_text() == stored and (tmp_path / (kept + ".lock")).exists()
    # Torn down again: a marker is nothing to delete.
    assert delete_state(PROJECT, "test.x", storage=storage) == []


def test_delete_state_marks_every_source_of_the_branch(tmp_path):
    """A multi-source sensor keeps one object per source beside <branch>.json: all are marked."""
    from flowproject.state import state_path

    gone = [
        state_path("SensorFlow", PROJECT, "test.x"),
        state_path("SensorFlow", PROJECT, "test.x", source="events"),
        state_path("SensorFlow", PROJECT, "test.x", source="orders"),
        state_path("OldSensorFlow", PROJECT, "test.x", source="events"),
    ]
    kept = [
        state_path("SensorFlow", PROJECT, "test.y", source="events"),
        state_path("SensorFlow", PROJECT, "test.x_1", source="events"),
        state_path("SensorFlow", "otherproject", "test.x", source="events"),
    ]
    stored = '{"baseline": null, "history": [{"kind": "first"}]}'
    root = tmp_path / ".metaflow"
    for path in gone + kept:
        (root / path).parent.mkdir(parents=True, exist_ok=True)
        (root / path).write_text(stored)
    env = dict(
        os.environ,
        METAFLOW_DEFAULT_DATASTORE="local",
        METAFLOW_DATASTORE_SYSROOT_LOCAL=str(tmp_path),
        METAFLOW_HOME=str(tmp_path / "metaflow-home"),
        PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""),
    )

    def delete_state_command(*args):
        argv = [sys.executable, "-m", "flowproject.deploy_support", "delete-state", "test.x"]
        return subprocess.run(
            argv + ["--project", PROJECT] + list(args),
            cwd=str(tmp_path),
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )

    proc = delete_state_command()
    assert proc.returncode == 0, proc.stdout + proc.stderr
    for path in gone:
        assert "deleted sensor state %s" % path in proc.stdout
        marker = json.loads((root / path).read_text())
        assert marker["reset"]["by"] == "deploy --teardown" and marker["history"] == []
    for path in kept:
        assert path not in proc.stdout
        assert (root / path).read_text() == stored
    assert proc.stdout.count("deleted sensor state") == len(gone)
    # Torn down again: every object is a marker already.
    proc = delete_state_command()
    assert proc.returncode == 0 and "no sensor state of %s.test.x" % PROJECT in proc.stdout


def test_flow_name_is_the_class_the_flow_file_runs(tmp_path):
    assert flow_name(os.path.join(REPO, "sensorflow.py")) == "SensorFlow"
    assert flow_name(os.path.join(REPO, "starterflow.py")) == "StarterFlow"
    imported = tmp_path / "importedflow.py"
    imported.write_text(
        "from elsewhere import Helper, OtherFlow\n\n"
        "class Unused(object):\n    pass\n\n"
        "if __name__ == '__main__':\n    Helper.setup()\n    OtherFlow()\n"
    )
    assert flow_name(str(imported)) == "OtherFlow"
    library = tmp_path / "libflow.py"
    library.write_text("class LibFlow(object):\n    pass\n")
    with pytest.raises(ValueError, match="libflow.py runs no flow class"):
        flow_name(str(library))


class ArgoStandIn(LoopbackHTTPServer):
    """The part of the Kubernetes API ``argo-workflows delete`` uses, on 127.0.0.1.

    ``resources`` is the set of existing ``(plural, namespace, name)``: GET answers them (as
    Metaflow deployments owned by METAFLOW_USER), DELETE removes them; anything else is 404.
    """

    GROUP_PREFIX = "/apis/argoproj.io/v1alpha1/namespaces/"

    def __init__(self, resources):
        super().__init__()
        self.resources = set(resources)
        self.deleted = []

    def kubeconfig(self, folder):
        path = os.path.join(str(folder), "kubeconfig")
        server = "http://127.0.0.1:%d" % self.port
        context = {"cluster": "standin", "user": "ci"}
        with open(path, "w") as f:
            json.dump(
                {
                    "apiVersion": "v1",
                    "kind": "Config",
                    "clusters": [{"name": "standin", "cluster": {"server": server}}],
                    "users": [{"name": "ci", "user": {"token": "not-a-secret"}}],
                    "contexts": [{"name": "standin", "context": context}],
                    "current-context": "standin",
                },
                f,
            )
        return path

    def handler(self):
        stand_in = self

        class Handler(BaseHTTPRequestHandler):
            def _resource(self):
                path = self.path.split("?")[0]
                if not path.startswith(stand_in.GROUP_PREFIX):
                    return None
                parts = path[len(stand_in.GROUP_PREFIX) :].split("/")
                if len(parts) != 3:
                    return None
                namespace, plural, name = parts
                return plural, namespace, name

            def _answer(self, status, body):
                data = json.dumps(body).encode("utf-8")
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _not_found(self):
                self._answer(
                    404,
                    {"kind": "Status", "status": "Failure", "reason": "NotFound", "code": 404},
                )

            def do_GET(self):
                resource = self._resource()
                if resource not in stand_in.resources:
                    return self._not_found()
                annotations = {"metaflow/owner": "tester", "metaflow/production_token": "t"}
                self._answer(200, {"metadata": {"name": resource[2], "annotations": annotations}})

            def do_DELETE(self):
                resource = self._resource()
                if resource not in stand_in.resources:
                    return self._not_found()
                stand_in.resources.discard(resource)
                stand_in.deleted.append(resource)
                self._answer(200, {"kind": "Status", "status": "Success"})

            def log_message(self, *args):
                pass

        return Handler


def _deployment(flow_name, branch):
    """The Argo resources ``argo-workflows create`` makes for a flow, named as Metaflow does."""
    from unittest import mock

    from metaflow.plugins.argo import argo_workflows_cli
    from metaflow.plugins.argo.argo_workflows import ArgoWorkflows

    class Current(object):
        project_flow_name = "%s.%s.%s" % (PROJECT, branch, flow_name)
        branch_name = branch

        def get(self, key, default=None):
            return PROJECT if key == "project_name" else default

    Current.flow_name = flow_name
    with mock.patch.object(argo_workflows_cli, "current", Current()):
        name = argo_workflows_cli.resolve_workflow_name_v2(None, None)[0]
    namespace = "jobs-default"
    return {
        ("workflowtemplates", namespace, name),
        ("cronworkflows", namespace, name),
        ("sensors", namespace, ArgoWorkflows._sensor_name(name)),
    }


@pytest.mark.e2e
def test_teardown_deletes_every_flows_deployment_and_the_state_of_that_branch_only(
    git_repo, deploy_env, moto_server, stored_states, tmp_path
):
    flow_names = ["SensorFlow", "StarterFlow"]
    gone = set().union(*(_deployment(f, TEARDOWN_MF_BRANCH) for f in flow_names))
    kept = set().union(
        *(_deployment(f, b) for f in flow_names for b in ["prod", "test." + FEATURE_MF_BRANCH])
    )
    with ArgoStandIn(gone | kept) as argo:
        env = {"KUBECONFIG": argo.kubeconfig(tmp_path)}
        proc = run_deploy(git_repo, deploy_env, "--teardown", TEARDOWN_BRANCH, env=env)
        _ok(proc)
        assert set(argo.deleted) == gone
        assert argo.resources == kept
        for key in stored_states["gone"]:
            assert _is_reset_marker(moto_server, key)
        for key in stored_states["kept"]:
            assert not _is_reset_marker(moto_server, key)
        summary = proc.stdout.split("Summary")[1]
        assert summary.count("deleted") == 3, summary
        assert "deleted 2 object(s)" in summary

        # Again: nothing left to delete is not an error (a branch deleted before it deployed).
        proc = run_deploy(git_repo, deploy_env, "--teardown", TEARDOWN_BRANCH, env=env)
        _ok(proc)
        summary = proc.stdout.split("Summary")[1]
        assert summary.count("not deployed, nothing to delete") == 2, summary
        assert "deleted 0 object(s)" in summary
        assert argo.resources == kept


@pytest.mark.e2e
def test_teardown_fails_naming_the_flow_when_argo_refuses(
    git_repo, deploy_env, moto_server, stored_states, tmp_path
):
    with ArgoStandIn(_deployment("SensorFlow", TEARDOWN_MF_BRANCH)) as argo:
        env = {"KUBECONFIG": argo.kubeconfig(tmp_path)}
        argo.stop()  # connection refused
        proc = run_deploy(
            git_repo, deploy_env, "--teardown", TEARDOWN_BRANCH, "--flow", "sensor*", env=env
        )
    assert proc.returncode == 1
    assert "FAILED: sensorflow.py" in proc.stderr
    # The sensor may still be deployed: its baseline stays.
    assert "(sensor state)" in proc.stdout and "kept" in proc.stdout.split("Summary")[1]
    for key in stored_states["gone"]:
        assert _exists(moto_server, key)


SCOPE_BRANCH = "feature/Scope"  # issue 18 #4: a branch of its own, nothing else uses it


def local_datastore(workdir):
    """Settings that put Metaflow's datastore and metadata in ``workdir``: a run there costs a
    third of one on the S3 datastore (each artifact a helper process), and what the teardown
    test shows (which flows' state a teardown resets) does not depend on the datastore; the
    S3 deletion has its own tests above."""
    return {
        "METAFLOW_DEFAULT_DATASTORE": "local",
        "METAFLOW_DEFAULT_METADATA": "local",
        "METAFLOW_DATASTORE_SYSROOT_LOCAL": str(workdir),
    }


def run_sensor(git_repo, deploy_env, webhook, config, workdir):
    """One real ``sensorflow.py run`` on SCOPE_BRANCH's @project branch, on the local datastore
    in ``workdir`` (``local_datastore(workdir)``, which the teardowns of the test use too);
    returns the events the webhook received during the run."""
    base, ensure_bucket = deploy_env
    ensure_bucket()
    env = dict(
        base,
        **local_datastore(workdir),
        # Only the plugins a local run uses (the teardowns keep the deployment's own home).
        METAFLOW_HOME=local_metaflow_home(workdir.parent / "metaflow-home"),
        METAFLOW_ARGO_EVENTS_WEBHOOK_URL=webhook.url,
        METAFLOW_SERVICE_RETRY_COUNT="1",
        AWS_ENDPOINT_URL_S3=base["METAFLOW_S3_ENDPOINT_URL"],
        PYTHONPATH=str(git_repo),
    )
    before = len(webhook.events)
    argv = [sys.executable, str(git_repo / "sensorflow.py"), "--config", "flowconfig", config]
    proc = subprocess.run(
        argv + project_args(SCOPE_BRANCH) + ["run"],
        cwd=str(workdir),
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return webhook.events[before:]


def stored_files(folder):
    """``{path relative to folder: bytes}`` of every file under ``folder`` (none: ``{}``)."""
    found = {}
    for root, _, files in os.walk(str(folder)):
        for name in files:
            path = os.path.join(root, name)
            with open(path, "rb") as f:
                found[os.path.relpath(path, str(folder))] = f.read()
    return found


@pytest.mark.e2e
def test_teardown_of_one_flow_keeps_the_baseline_of_the_flows_still_deployed(
    git_repo, deploy_env, moto_server, webhook, tmp_path
):
    """issue 18 #4: ``--teardown BRANCH --flow starterflow.py`` deletes StarterFlow only; the
    SensorFlow still deployed on the branch keeps its baseline (its state untouched), and
    ``--flow sensor*`` then resets it: the next run announces the same data anew."""
    mf_branch = "test." + branch_name(SCOPE_BRANCH)
    bucket = "scope-%s" % os.path.basename(str(tmp_path)).replace("_", "-").lower()[-20:]
    client = moto_server.client()
    client.create_bucket(Bucket=bucket)
    client.put_object(Bucket=bucket, Key="events/a.csv", Body=b"a")
    config = str(tmp_path / "flowconfig.toml")
    with open(config, "w") as f:
        # No card: none is read here, and an announcing run draws it in a process of its own.
        f.write(
            s3_config(
                bucket, "events/", "files_metadata", project=PROJECT, extra_sensor="card = false"
            )
        )
    workdir = tmp_path / "run"
    workdir.mkdir()

    (first,) = run_sensor(git_repo, deploy_env, webhook, config, workdir)
    assert first["name"] == "mfns.%s.%s.%s" % (PROJECT, mf_branch, EVENT)

    starter = _deployment("StarterFlow", mf_branch)
    sensor = _deployment("SensorFlow", mf_branch)
    states = workdir / ".metaflow" / "SensorFlow" / "sensor_state"
    announced = stored_files(states)
    assert "%s/%s.json" % (PROJECT, mf_branch) in announced  # the baseline the run wrote
    with ArgoStandIn(starter | sensor) as argo:
        env = dict(local_datastore(workdir), KUBECONFIG=argo.kubeconfig(tmp_path))
        proc = run_deploy(
            git_repo, deploy_env, "--teardown", SCOPE_BRANCH, "--flow", "starterflow.py", env=env
        )
        _ok(proc)
        assert set(argo.deleted) == starter and argo.resources == sensor
        # The sensor still deployed keeps its state as its run wrote it, byte for byte, so its
        # next check of unchanged data is an unchanged check (no event: shown through a run by
        # every e2e file, e.g. test_multi_source_e2e.py's second check).
        assert stored_files(states) == announced
        assert "deleted 0 object(s)" in proc.stdout.split("Summary")[1]
        assert "SensorFlow" not in proc.stdout

        # Tearing the sensor down resets its own state: a re-created branch starts afresh.
        proc = run_deploy(
            git_repo, deploy_env, "--teardown", SCOPE_BRANCH, "--flow", "sensor*", env=env
        )
        _ok(proc)
        assert argo.resources == set()
        state = "SensorFlow/sensor_state/%s/%s.json" % (PROJECT, mf_branch)
        assert "deleted sensor state %s" % state in proc.stdout
        assert "deleted 1 object(s)" in proc.stdout.split("Summary")[1]
    (again,) = run_sensor(git_repo, deploy_env, webhook, config, workdir)
    assert again["payload"]["data_version"] == first["payload"]["data_version"]


# ---------------------------------------------------------------------------------- CI


def _workflow(name):
    yaml = pytest.importorskip("yaml")
    with open(os.path.join(REPO, ".github", "workflows", name)) as f:
        workflow = yaml.safe_load(f)
    # YAML 1.1 reads the key `on` as True.
    workflow["on"] = workflow.pop(True, workflow.get("on"))
    return workflow


def test_ci_deploys_only_after_the_tests_of_the_same_commit_passed():
    tests, deploy = _workflow("tests.yml"), _workflow("deploy.yml")
    assert "workflow_call" in tests["on"]
    # tests.yml runs for pushes through deploy.yml only, so each commit is tested once.
    assert "push" not in tests["on"]
    jobs = deploy["jobs"]
    assert jobs["tests"]["uses"] == "./.github/workflows/tests.yml"
    assert jobs["deploy"]["needs"] == "tests"
    condition = " ".join(jobs["deploy"]["if"].split())
    assert "github.event_name == 'push' && needs.tests.result == 'success'" in condition
    steps = {step.get("name"): step for step in jobs["deploy"]["steps"]}
    assert steps["Deploy"]["run"] == "./deploy"
    assert steps["Deploy"]["if"] == "github.event_name == 'push'"


def test_ci_tears_down_a_deleted_branch():
    deploy = _workflow("deploy.yml")
    assert "delete" in deploy["on"]
    job = deploy["jobs"]["deploy"]
    assert "github.event_name == 'delete' && github.event.ref_type == 'branch'" in job["if"]
    step = {step.get("name"): step for step in job["steps"]}["Tear down the deleted branch"]
    assert step["if"] == "github.event_name == 'delete'"
    # The branch name reaches the script through the environment (no expression injection).
    assert step["env"]["DELETED_BRANCH"] == "${{ github.event.ref }}"
    assert step["run"] == './deploy --teardown "$DELETED_BRANCH"'


def test_ci_aws_credentials_oidc_by_default_keys_as_fallback():
    job = _workflow("deploy.yml")["jobs"]["deploy"]
    assert job["permissions"]["id-token"] == "write"
    aws_steps = [
        step
        for step in job["steps"]
        if step.get("uses", "").startswith("aws-actions/configure-aws-credentials@")
    ]
    oidc, keys = aws_steps
    assert oidc["if"] == "env.AWS_ROLE_ARN != ''"
    assert oidc["with"]["role-to-assume"] == "${{ env.AWS_ROLE_ARN }}"
    assert "aws-access-key-id" not in oidc["with"]
    assert keys["if"].startswith("env.AWS_ROLE_ARN == ''")
    assert keys["with"]["aws-access-key-id"] == "${{ secrets.AWS_ACCESS_KEY_ID }}"
    # No long-lived key in the job's environment when the role is used.
    assert "AWS_ACCESS_KEY_ID" not in job["env"]


# ---------------------------------------------------------------------------------- linters


def test_deploy_is_shellcheck_clean():
    proc = subprocess.run([_tool("shellcheck"), "deploy"], cwd=REPO, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_deploy_is_executable():
    assert os.access(os.path.join(REPO, "deploy"), os.X_OK)


def test_workflows_pass_actionlint():
    workflows = os.path.join(REPO, ".github", "workflows")
    files = sorted(
        os.path.join(workflows, f) for f in os.listdir(workflows) if f.endswith((".yml", ".yaml"))
    )
    assert [os.path.basename(f) for f in files] == ["deploy.yml", "tests.yml"]
    # actionlint also runs shellcheck on the run: scripts when it finds it on PATH.
    env = dict(os.environ, PATH=BIN + os.pathsep + os.environ.get("PATH", ""))
    proc = subprocess.run(
        [_tool("actionlint")] + files, cwd=REPO, env=env, capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
