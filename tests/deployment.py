"""What the deploy tests share: a throwaway git repository holding the working tree, the
environment of a deployment (S3 datastore on loopback, Kubernetes and Argo Events settings),
and ``./deploy --dry-run`` compiled once per test session on ``main`` and on a feature branch.

The fixtures are session-scoped and registered by conftest.py, so test_deploy, test_argo_sensor
and test_deploy_settings share one repository and one compile per xdist worker (a compile takes
seconds). A test that checks out another branch or commits goes back to ``main``.
"""

import copy
import json
import os
import shutil
import subprocess
import sys

import pytest
from configs import s3_config

from flowproject.config import parse_flowconfig

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ARGO_SCHEMA = os.path.join(os.path.dirname(REPO), "shared", "argo", "workflows-schema.json")
EVENTS_SCHEMA = os.path.join(os.path.dirname(REPO), "shared", "argo-events", "events-schema.json")
BIN = os.path.dirname(sys.executable)

FEATURE_BRANCH = "Foo-1"
FEATURE_MF_BRANCH = "foo_1_596979"  # short enough that Argo does not shorten the names
DATASTORE_BUCKET = "deploy-test"

# The flowconfig.toml of the deployed copy (git_repo): the tests' own, never the user's.
CONFIG_TEXT = s3_config(
    "my-ml-data",
    "events/",
    "files_metadata",
    project="flowproject",
    extra_sensor="namespaced_events = true",
)
CONFIG = parse_flowconfig(CONFIG_TEXT)
PROJECT = CONFIG["project_name"]
EVENT = CONFIG["sensor"]["event_name"]


# The Kubernetes and Argo Events settings of a real deployment (no cluster is reached).
CLUSTER_SETTINGS = {
    "METAFLOW_KUBERNETES_NAMESPACE": "jobs-default",
    "METAFLOW_KUBERNETES_SERVICE_ACCOUNT": "default-editor",
    "METAFLOW_ARGO_EVENTS_EVENT": "metaflow-event",
    "METAFLOW_ARGO_EVENTS_EVENT_BUS": "default",
    "METAFLOW_ARGO_EVENTS_EVENT_SOURCE": "argo-events-webhook",
    "METAFLOW_ARGO_EVENTS_SERVICE_ACCOUNT": "operate-workflow-sa",
    "METAFLOW_ARGO_EVENTS_SENSOR_NAMESPACE": "jobs-default",
    "METAFLOW_ARGO_EVENTS_WEBHOOK_URL": "http://argo-events-webhook:12000/metaflow-event",
}


def _git(repo, *args):
    subprocess.run(
        ["git", "-c", "user.name=test", "-c", "user.email=test@example.com"] + list(args),
        cwd=repo,
        check=True,
        capture_output=True,
        text=True,
    )


def flow_files():
    return sorted(f for f in os.listdir(REPO) if f.endswith("flow.py"))


@pytest.fixture(scope="session")
def deploy_env(moto_server, tmp_path_factory):
    """Environment of a deployment: S3 datastore on loopback, Kubernetes and Argo Events."""
    client = moto_server.client()
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("METAFLOW_", "GITHUB_", "AWS_", "ARGO_"))
    }
    env.update(
        {
            "PYTHON": sys.executable,
            "PATH": BIN + os.pathsep + env.get("PATH", ""),
            "PYTHONUNBUFFERED": "1",
            "METAFLOW_HOME": str(tmp_path_factory.mktemp("metaflow-home")),
            "METAFLOW_USER": "tester",
            "METAFLOW_DEFAULT_DATASTORE": "s3",
            "METAFLOW_DATASTORE_SYSROOT_S3": "s3://%s/metaflow" % DATASTORE_BUCKET,
            "METAFLOW_S3_ENDPOINT_URL": moto_server.endpoint_url,
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_DEFAULT_REGION": "us-east-1",
            **CLUSTER_SETTINGS,
        }
    )

    def ensure_bucket():
        # Other test modules reset the shared server between their tests.
        if DATASTORE_BUCKET not in [b["Name"] for b in client.list_buckets()["Buckets"]]:
            client.create_bucket(Bucket=DATASTORE_BUCKET)

    return env, ensure_bucket


@pytest.fixture(scope="session")
def git_repo(tmp_path_factory):
    """A throwaway git repository holding the working tree's files, on branch main."""
    listed = subprocess.run(
        ["git", "ls-files", "-co", "--exclude-standard"],
        cwd=REPO,
        capture_output=True,
        text=True,
    )
    if listed.returncode != 0:
        pytest.skip("the repository is not a git checkout: %s" % listed.stderr.strip())
    repo = tmp_path_factory.mktemp("deploy") / "repo"
    for name in listed.stdout.splitlines():
        source = os.path.join(REPO, name)
        if not os.path.isfile(source):  # deleted in the working tree
            continue
        target = repo / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source, target)
    (repo / "flowconfig.toml").write_text(CONFIG_TEXT)
    _git(repo, "init", "-q", "-b", "main")
    _git(repo, "add", "-A")
    _git(repo, "commit", "-q", "-m", "copy of the working tree")
    return repo


def run_deploy(repo, deploy_env, *args, env=None):
    base, ensure_bucket = deploy_env
    ensure_bucket()
    return subprocess.run(
        [os.path.join(str(repo), "deploy")] + list(args),
        cwd=repo,
        env=dict(base, **(env or {})),
        capture_output=True,
        text=True,
        timeout=300,
    )


def load_templates(out_dir):
    templates = {}
    for flow in flow_files():
        path = os.path.join(str(out_dir), flow[: -len(".py")] + ".json")
        with open(path) as f:
            templates[flow] = json.load(f)
    return templates


@pytest.fixture(scope="session")
def compiled(git_repo, deploy_env, tmp_path_factory):
    """``./deploy --dry-run`` on main, then on a feature branch: {"main"|"feature": result}."""
    results = {}
    for label, branch in [("main", None), ("feature", FEATURE_BRANCH)]:
        if branch:
            _git(git_repo, "checkout", "-q", "-b", branch)
        out = tmp_path_factory.mktemp("out-%s" % label)
        proc = run_deploy(git_repo, deploy_env, "--dry-run", "--out", str(out))
        results[label] = (proc, out)
    _git(git_repo, "checkout", "-q", "main")
    return results


def _ok(proc):
    assert proc.returncode == 0, "deploy failed:\n%s\n%s" % (proc.stdout, proc.stderr)


def argo_schema(path, definition):
    """The JSON schema of ``definition`` in the Argo schema file ``path``, with the
    IntOrString relaxation of its README; skips the test where the file is absent (it is beside
    the checkout in CI)."""
    if not os.path.exists(path):
        pytest.skip("Argo schema not found at %s (it is beside the checkout in CI)" % path)
    with open(path) as f:
        definitions = copy.deepcopy(json.load(f)["definitions"])
    definitions["io.k8s.apimachinery.pkg.util.intstr.IntOrString"] = {"type": ["string", "integer"]}
    return {"$ref": "#/definitions/%s" % definition, "definitions": definitions}


@pytest.fixture(scope="session")
def workflow_template_schema():
    """The Argo Workflows schema of a WorkflowTemplate."""
    return argo_schema(ARGO_SCHEMA, "io.argoproj.workflow.v1alpha1.WorkflowTemplate")


def schema_errors(schema, document):
    """``"path: message"`` for each way ``document`` (nulls pruned: Argo omits them) fails the
    JSON ``schema``; ``[]`` when it validates."""
    from jsonschema import Draft202012Validator

    return [
        "%s: %s" % ("/".join(map(str, e.absolute_path)), e.message[:200])
        for e in Draft202012Validator(schema).iter_errors(_prune_nulls(document))
    ]


def _prune_nulls(value):
    if isinstance(value, dict):
        return {k: _prune_nulls(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_prune_nulls(v) for v in value]
    return value


@pytest.fixture(scope="session")
def sensor_schema():
    """The Argo Events schema of a Sensor."""
    return argo_schema(EVENTS_SCHEMA, "io.argoproj.events.v1alpha1.Sensor")


def load_sensor(out):
    with open(os.path.join(str(out), "starterflow.sensor.json")) as f:
        return json.load(f)
