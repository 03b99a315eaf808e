"""Shared fixtures: loopback S3 (moto server), an Argo Events webhook, and flow runs.

Each test that runs a flow gets its own working folder (its own ``.metaflow``) and its own
config file; the servers are shared per session (per xdist worker: each binds its own free
port) and reset between tests. No test reads the repository's flowconfig.toml except
test_flowconfig_file.py, which validates it.

The ``e2e`` marker is set here too, so that a new test file needs nothing: on every test
that runs a real flow or a deployment (``./scripts/test --quick`` leaves them out).
scripts/test runs the tests on several xdist workers: every fixture works in its own
tmp folders and on its own free ports, and a module-scoped fixture may be built once per
worker.
"""

import json
import os
import subprocess
import sys
import textwrap
import uuid

import pytest
import tomllib
from configs import local_metaflow_home, s3_config  # noqa: F401  (tests import s3_config)
from deployment import (  # noqa: F401  (session fixtures: one repository, one compile)
    compiled,
    deploy_env,
    git_repo,
    sensor_schema,
    workflow_template_schema,
)

from flowproject.testing import MotoS3Server, WebhookReceiver, sensor_env

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# Fixtures that start a real flow, a deployment or the demo: a test using one is e2e.
E2E_FIXTURES = {"flow_runner", "compiled", "git_repo"}
# Test files whose every test runs a real flow (the others mark theirs, or use a fixture).
E2E_MODULES = ("_e2e.py",)


def pytest_itemcollected(item):
    # As each test is collected, before -m selects.
    names = set(getattr(item, "fixturenames", ()))
    if names & E2E_FIXTURES or item.nodeid.split("::")[0].endswith(E2E_MODULES):
        item.add_marker(pytest.mark.e2e)


def checkout_runs():
    """What the checkout's own ``.metaflow`` holds (a user's local runs and sensor state):
    ``<flow>/<run or folder>`` paths; None when there is no such folder."""
    folder = os.path.join(REPO, ".metaflow")
    if not os.path.isdir(folder):
        return None
    return {
        os.path.join(flow, entry)
        for flow in os.listdir(folder)
        if os.path.isdir(os.path.join(folder, flow))
        for entry in os.listdir(os.path.join(folder, flow))
    }


@pytest.fixture(scope="session", autouse=True)
def no_test_writes_the_checkouts_metaflow():
    """A flow run without ``METAFLOW_DATASTORE_SYSROOT_LOCAL`` keeps its runs next to the flow
    file: in the checkout, among the user's own. Every test's runs belong in its own folder."""
    before = checkout_runs()
    yield
    after = checkout_runs()
    assert before is not None or after is None, "tests created %s/.metaflow" % REPO
    added = sorted((after or set()) - (before or set()))
    assert not added, "tests wrote into %s/.metaflow: %s" % (REPO, ", ".join(added[:5]))


@pytest.fixture(scope="session")
def moto_server(tmp_path_factory):
    log = tmp_path_factory.mktemp("moto") / "moto.log"
    with MotoS3Server(log_path=str(log)) as server:
        yield server


def use_loopback_s3(monkeypatch, endpoint_url):
    """Point this test's own process (sources, state, ``check_once``) at the loopback S3
    ``endpoint_url`` with test credentials, as ``sensor_env`` does for a flow's processes."""
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", endpoint_url)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")


@pytest.fixture
def s3_server(moto_server):
    """The loopback S3 server, emptied before the test."""
    moto_server.reset()
    return moto_server


@pytest.fixture
def s3_client(s3_server):
    return s3_server.client()


@pytest.fixture
def bucket(s3_client):
    name = "bucket-%s" % uuid.uuid4().hex[:8]
    s3_client.create_bucket(Bucket=name)
    return name


@pytest.fixture
def webhook():
    with WebhookReceiver() as receiver:
        yield receiver


class FlowRunner(object):
    """Runs a flow file of the repository as a user would, in a private working folder.

    Unless the test is marked ``@pytest.mark.cards`` (it reads a card), the configs it writes
    get ``[sensor] card = false`` where they do not say: a card is drawn in a process of its
    own, about a second per announcing run, and most tests never look at one.
    """

    def __init__(self, workdir, env, cards=False):
        self.workdir = str(workdir)
        self.env = env
        self.cards = cards
        self.config_path = os.path.join(self.workdir, "flowconfig.toml")

    def write_config(self, text):
        text = textwrap.dedent(text)
        if not self.cards:
            text = without_cards(text)
        with open(self.config_path, "w") as f:
            f.write(text)
        return self.config_path

    def dev_loop(self):
        """The ``DevLoop`` that ``flowproject dev`` run in this folder would be: the
        repository's flows, this config and environment, its logs in ``logs``."""
        from flowproject.devloop import DevLoop

        return DevLoop(
            root=REPO,
            config=self.config_path,
            env=self.env,
            cwd=self.workdir,
            log_dir=os.path.join(self.workdir, "logs"),
        )

    def run(self, *args, flow="sensorflow.py", top_args=(), env=None, timeout=300):
        """``python <flow> --config flowconfig <config> [top_args] run [args]``."""
        argv = [
            sys.executable,
            os.path.join(REPO, flow),
            "--config",
            "flowconfig",
            self.config_path,
        ]
        argv += list(top_args) + ["run"] + list(args)
        return subprocess.run(
            argv,
            cwd=self.workdir,
            env=dict(self.env, **(env or {})),
            capture_output=True,
            text=True,
            timeout=timeout,
        )


def client_data(flow_runner, expression):
    """The JSON value of ``expression`` (Python, with ``Flow`` and ``json`` imported, every
    namespace visible) read with Metaflow's client in the runner's folder, as a user would."""
    code = (
        "import json; from metaflow import Flow, namespace; namespace(None); "
        "print(json.dumps(%s))" % expression
    )
    return client_json(flow_runner, code)


def client_json(flow_runner, code):
    """Run the Python ``code`` in the runner's folder and environment (a process of its own,
    as a user's script); the JSON value its last line of output printed."""
    out = subprocess.run(
        [sys.executable, "-c", code],
        cwd=flow_runner.workdir,
        env=flow_runner.env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])


def without_cards(text):
    """``text`` (a flowconfig.toml) with ``card = false`` in its ``[sensor]`` table, unless the
    table sets ``card`` or the text is not valid TOML (then it is the test's to be wrong)."""
    try:
        sensor = tomllib.loads(text).get("sensor")
    except tomllib.TOMLDecodeError:
        return text
    if not isinstance(sensor, dict) or "card" in sensor:
        return text
    lines = text.splitlines(keepends=True)
    for i, line in enumerate(lines):
        if line.strip() == "[sensor]":
            lines.insert(i + 1, "card = false\n")
            return "".join(lines)
    return text  # [sensor] written another way (inline, dotted keys): leave it


READ_STARTER_RUNS = textwrap.dedent(
    """\
    import json
    from metaflow import Flow, namespace
    namespace(None)
    runs = []
    try:
        flow = Flow("StarterFlow")
    except Exception:  # no run yet
        flow = []
    for run in flow:
        data = run.data if run.successful else None
        runs.append({
            "id": run.id,
            "successful": run.successful,
            "tags": sorted(run.tags),
            "data_version": getattr(data, "data_version", None),
            "trained_on": getattr(data, "trained_on_value", None),
            "sensor_duplicate": getattr(data, "sensor_duplicate", None),
            "objects_read": getattr(data, "objects_read", None),
            "change_id": getattr(data, "sensor_change_id", None),
        })
    print(json.dumps(runs))
    """
)


def starter_runs(flow_runner, branch=None):
    """The StarterFlow runs in the runner's folder (of one @project ``branch``, if given),
    oldest first, read with Metaflow's client: id, outcome, tags and what the run recorded."""
    runs = client_json(flow_runner, READ_STARTER_RUNS)
    if branch is not None:
        runs = of_branch(runs, branch)
    return sorted(runs, key=lambda r: int(r["id"]))


def of_branch(runs, branch):
    """The runs (as ``starter_runs`` returns them) of one @project ``branch``: a test that
    looks at several branches reads every run once and picks each branch's here."""
    return [r for r in runs if "project_branch:%s" % branch in r["tags"]]


def accept_current_value(workdir, config_text, branch, source="default"):
    """Make the source's current value the baseline of SensorFlow's ``branch`` in the local
    datastore of ``workdir``, without an event: what ``flowproject reset --to-current`` does,
    the same code (``reset_branch``), in this process, a fraction of a flow run's CPU. For a
    test whose first check is set-up it never examines; the source is read through this
    process's endpoint (``use_loopback_s3``, or the environment). Returns the new state."""
    from metaflow.plugins.datastores.local_storage import LocalStorage

    from flowproject import parse_flowconfig
    from flowproject.operations import reset_branch, state_store

    config = parse_flowconfig(config_text)
    storage = LocalStorage(os.path.join(str(workdir), ".metaflow"))
    store = state_store("SensorFlow", config["project_name"], branch, storage, source=source)
    state = reset_branch(store, config=config, to_current=True, by="test")
    assert state.baseline is not None and state.baseline.run is None
    return state


@pytest.fixture
def flow_runner(request, tmp_path, s3_server, webhook):
    # The tests name the user branch: user.tester, whatever METAFLOW_USER CI has set.
    env = sensor_env(
        s3_server.endpoint_url,
        webhook.url,
        local_metaflow_home(tmp_path / "metaflow-home"),
        user="tester",
        workdir=str(tmp_path),
    )
    env["PYTHONPATH"] = REPO + os.pathsep + env.get("PYTHONPATH", "")
    return FlowRunner(tmp_path, env, cards=request.node.get_closest_marker("cards") is not None)
