"""``flowproject status``, ``reset`` and ``replay`` with a multi-source ``flowconfig.toml``.

State objects are written into a local datastore in the test's folder (as the multi-source
SensorFlow lays them out: ``<branch>/<source>.json``), or by one real run of it (replay needs
the run's ``events`` artifact); the commands run as a user runs them, ``python -m flowproject
...`` in that folder.
"""

import json
import os
import subprocess
import sys
import textwrap

import pytest
from configs import local_metaflow_home
from conftest import REPO

from flowproject.sensor import Baseline, Pending, SensorState
from flowproject.testing import sensor_env

PROJECT, BRANCH = "testproject", "user.tester"
SCOPE = {"flow": "SensorFlow", "project": PROJECT, "branch": BRANCH}


def multi_config(bucket="some-bucket", sources=("events", "orders", "clicks")):
    """A multi-source flowconfig.toml: one S3 prefix per source name."""
    text = (
        """\
        project_name = "%s"
        [sensor]
        cron_schedule = "*/5 * * * *"
        """
        % PROJECT
    )
    for name in sources:
        text += """
        [sources.%s]
        type = "s3"
        bucket = "s3://%s"
        key = "%s/"
        check_mode = "files_metadata"
        event_name = "%s_updated"
        payload_key = "%s_version"
        """ % (name, bucket, name, name, name)
    return textwrap.dedent(text)


class Workdir(object):
    """A folder with its own datastore and flowconfig.toml, where the commands run."""

    def __init__(self, path, env):
        self.path, self.env = str(path), env
        self.config = os.path.join(self.path, "flowconfig.toml")

    def write_config(self, text):
        with open(self.config, "w") as f:
            f.write(text)

    def cli(self, *args, input=None):
        return subprocess.run(
            [sys.executable, "-m", "flowproject"] + list(args),
            cwd=self.path,
            env=self.env,
            capture_output=True,
            text=True,
            input=input,
            timeout=120,
        )

    def store(self, source):
        from metaflow.plugins.datastores.local_storage import LocalStorage

        from flowproject.state import StateStore

        storage = LocalStorage(os.path.join(self.path, ".metaflow"))
        return StateStore(storage, "SensorFlow", PROJECT, BRANCH, source=source)

    def save(self, source, value=None, change_id=None, run=None, pending=None, history=()):
        state = SensorState(
            scope=dict(SCOPE, source=source),
            identity={"bucket": "some-bucket", "key": "%s/" % source},
            history=list(history),
        )
        if value is not None:
            state.baseline = Baseline(value, "fp-" + value, change_id, run, "2026-01-01T00:00")
        if pending is not None:
            state.pending = Pending(pending, "fp-" + pending, 1, "2026-01-01T00:05")
        store = self.store(source)
        store.save(state, store.read_versioned()[1])  # written over what is there

    def state_bytes(self, source):
        with open(self.store(source).object.full_path, "rb") as f:
            return f.read()

    def load(self, source):
        return self.store(source).load(quiet=True)


@pytest.fixture
def workdir(tmp_path):
    home = local_metaflow_home(tmp_path / "metaflow-home")
    env = sensor_env(metaflow_home=home, user="tester", workdir=tmp_path)
    env["PYTHONPATH"] = REPO + os.pathsep + env.get("PYTHONPATH", "")
    env.pop("METAFLOW_OWNER", None)
    work = Workdir(tmp_path, env)
    work.write_config(multi_config())
    return work


def first_check(at="2026-01-01T00:00:00+00:00"):
    return {"at": at, "kind": "first", "published": True, "run": "SensorFlow/1"}


@pytest.fixture
def two_sources(workdir):
    """events and orders have state; clicks (also in flowconfig.toml) has none yet."""
    workdir.save("events", "ev-1", "cid-events-1", "SensorFlow/1", history=[first_check()])
    workdir.save(
        "orders", "or-1", "cid-orders-1", "SensorFlow/1", pending="or-2", history=[first_check()]
    )
    return workdir


def test_status_shows_every_source_of_the_branch(two_sources):
    work = two_sources
    proc = work.cli("status")
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert "SensorFlow  project testproject  branch user.tester  3 source(s)" in out
    # One block per source, in flowconfig.toml's order, the unchecked one said to be so.
    assert out.index("source events") < out.index("source orders") < out.index("source clicks")
    events, orders = out.split("source events")[1].split("source orders")
    orders, clicks = orders.split("source clicks")
    assert "baseline    ev-1" in events and "change      cid-events-1" in events
    assert "last check  first, published at 2026-01-01T00:00:00+00:00 by SensorFlow/1" in events
    assert "baseline    or-1" in orders and "change      cid-orders-1" in orders
    assert "settling    or-2 seen unchanged 1 time(s)" in orders
    assert "no state yet" in clicks and "ev-1" not in clicks
    assert "History of one source: flowproject status --source NAME" in out

    status = json.loads(work.cli("status", "--json").stdout)["states"]
    assert [(s["source"]["name"], s["stored"]) for s in status] == [
        ("events", True),
        ("orders", True),
        ("clicks", False),
    ]
    assert status[2]["error"] is None and status[2]["baseline"] is None

    # --source: that one source, with its history table.
    proc = work.cli("status", "--source", "orders")
    assert proc.returncode == 0, proc.stderr
    assert "SensorFlow  project testproject  branch user.tester  source orders" in proc.stdout
    assert "baseline    or-1" in proc.stdout and "decision" in proc.stdout
    assert "events" not in proc.stdout and "ev-1" not in proc.stdout
    proc = work.cli("status", "--source", "clicks")
    assert proc.returncode == 0, proc.stderr
    assert "source clicks" in proc.stdout and "no state yet" in proc.stdout


def test_unknown_source_names_the_known_ones(two_sources):
    work = two_sources
    before = {s: work.state_bytes(s) for s in ("events", "orders")}
    for command in (["status"], ["reset", "--yes"], ["replay"]):
        proc = work.cli(*command, "--source", "order")
        assert proc.returncode == 2, (command, proc.stdout, proc.stderr)
        assert "Invalid value for '--source'" in proc.stderr
        assert "no source named 'order'; flowconfig.toml has: events, orders, clicks" in (
            proc.stderr
        )
    assert {s: work.state_bytes(s) for s in ("events", "orders")} == before


def test_reset_of_one_source_leaves_the_others(two_sources):
    work = two_sources
    events_before = work.state_bytes("events")
    proc = work.cli("reset", "--source", "orders", input="n\n")
    assert proc.returncode == 1
    assert "reset source orders of SensorFlow branch user.tester of project testproject" in (
        proc.stdout
    )
    assert work.load("orders").baseline.value == "or-1"

    proc = work.cli("reset", "--source", "orders", "--yes")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert (
        "Reset source orders of SensorFlow branch user.tester of project testproject: the next "
        "check is a first check." in proc.stdout
    )
    orders = work.load("orders")
    assert orders.baseline is None and orders.pending is None
    assert orders.reset["by"] == "tester"
    assert orders.history[-1]["kind"] == "reset"
    assert work.state_bytes("events") == events_before  # untouched
    assert work.load("events").baseline.value == "ev-1"
    assert not os.path.exists(work.store("clicks").object.full_path)


def test_reset_without_source_resets_every_source_and_says_which(two_sources):
    work = two_sources
    proc = work.cli("reset", input="n\n")
    assert proc.returncode == 1
    assert "reset sources events, orders, clicks of SensorFlow branch user.tester" in proc.stdout
    assert work.load("events").baseline is not None

    proc = work.cli("reset", "--yes")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    for name in ("events", "orders", "clicks"):
        assert "Reset source %s of SensorFlow branch user.tester" % name in proc.stdout
        state = work.load(name)
        assert state.baseline is None and state.reset["by"] == "tester"
    assert "Reset 3 of 3 sources of SensorFlow branch user.tester." in proc.stdout
    # The single-source form's object is not one of these sources: none was written.
    assert not os.path.exists(work.store("default").object.full_path)


def test_a_source_being_announced_is_not_reset_and_the_others_are(two_sources):
    from flowproject.state import new_claim

    work = two_sources
    orders = work.store("orders")
    state, version = orders.load_versioned(quiet=True)
    orders.save(state, version, claim=new_claim("SensorFlow/7", "c0ffee", "or-2", 600))
    before = work.state_bytes("orders")

    proc = work.cli("reset", "--yes")
    assert proc.returncode == 2
    assert "source orders of SensorFlow branch user.tester: " in proc.stderr
    assert "run SensorFlow/7 is announcing change c0ffee right now" in proc.stderr
    assert "Reset 2 of 3 sources of SensorFlow branch user.tester; not reset: orders." in (
        proc.stdout
    )
    assert work.state_bytes("orders") == before
    assert work.load("events").baseline is None and work.load("clicks").reset["by"] == "tester"


def test_reset_to_current_checks_only_the_named_source(workdir, s3_server, s3_client, bucket):
    from flowproject.sensor import change_id
    from flowproject.sources import fingerprint

    work = workdir
    work.env.update(sensor_env(s3_server.endpoint_url, base={}))
    work.write_config(multi_config(bucket, sources=("events", "orders")))
    s3_client.put_object(Bucket=bucket, Key="events/part-0.parquet", Body=b"rows")
    s3_client.put_object(Bucket=bucket, Key="orders/part-0.parquet", Body=b"rows")
    work.save("orders", "or-1", "cid-orders-1", "SensorFlow/1", history=[first_check()])
    orders_before = work.state_bytes("orders")

    proc = work.cli("reset", "--to-current", "--source", "events", "--yes")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "Reset source events of SensorFlow branch user.tester of project testproject to " in (
        proc.stdout
    )
    assert "(no event published)" in proc.stdout
    events = work.load("events")
    value = events.baseline.value
    assert value and events.baseline.run is None and events.reset["to_current"] is True
    # The source's own scope and change id, as the flow would decide for it.
    assert events.scope["source"] == "events"
    assert events.baseline.change_id == change_id(
        "SensorFlow", BRANCH, fingerprint(value), project=PROJECT, source="events"
    )
    assert work.state_bytes("orders") == orders_before

    # Without --source, every source is checked and accepted.
    proc = work.cli("reset", "--to-current", "--yes")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "Reset 2 of 2 sources" in proc.stdout
    orders = work.load("orders")
    assert orders.baseline.value not in (None, "or-1") and orders.scope["source"] == "orders"


def test_status_says_which_source_carries_over_the_single_source_baseline(workdir):
    """[data] turned into [sources.events]: events' first check takes over <branch>.json."""
    from flowproject.config import configured_sources, load_flowconfig
    from flowproject.sources import source_identity

    work = workdir
    work.write_config(multi_config(sources=("events", "orders")))
    events = configured_sources(load_flowconfig(work.config))[0]
    legacy = SensorState(
        baseline=Baseline("ev-0", "fp-ev-0", "cid-legacy", "SensorFlow/1"),
        scope=dict(SCOPE, source="default"),
        identity=source_identity(events.data),
    )
    work.store("default").save(legacy, None)

    proc = work.cli("status")
    assert proc.returncode == 0, proc.stderr
    default, rest = proc.stdout.split("source default")[1].split("source events")
    assert "not a source of flowconfig.toml" in default and "baseline    ev-0" in default
    events_block, orders_block = rest.split("source orders")
    assert (
        "no state yet: its first check carries over the baseline of %s"
        % (work.store("default").storage.full_uri(work.store("default").path))
        in events_block
    )
    assert "no state yet: its next check is a first check" in orders_block


@pytest.mark.e2e
def test_status_and_replay_after_a_real_multi_source_run(flow_runner, webhook, s3_client, bucket):
    """The real SensorFlow checks two sources; the commands read what it left per source."""
    flow_runner.env["METAFLOW_DATASTORE_SYSROOT_LOCAL"] = flow_runner.workdir
    work = Workdir(flow_runner.workdir, flow_runner.env)
    work.write_config(multi_config(bucket, sources=("events", "orders")))
    for name in ("events", "orders"):
        s3_client.put_object(Bucket=bucket, Key="%s/part-0.parquet" % name, Body=b"rows")
    result = flow_runner.run()
    assert result.returncode == 0, result.stdout + result.stderr
    published = {e["payload"]["source"]: e for e in webhook.events}
    assert sorted(published) == ["events", "orders"]

    proc = work.cli("status")
    assert proc.returncode == 0, proc.stderr
    for name in ("events", "orders"):
        block = proc.stdout.split("source %s" % name)[1]
        assert "change      %s" % published[name]["payload"]["change_id"] in block
        assert "last check  first, published" in block

    # Replaying every source would start every downstream flow: one must be named.
    proc = work.cli("replay")
    assert proc.returncode == 2
    assert "has the sources events, orders: pass --source NAME" in proc.stderr
    assert len(webhook.events) == 2

    proc = work.cli("replay", "--source", "orders")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    replayed = webhook.events[-1]
    original = published["orders"]
    assert len(webhook.events) == 3 and replayed["name"] == original["name"]
    # The same payload (ArgoEvent gives a new id and timestamp), marked as a replay.
    own = ("id", "timestamp", "utc_date")
    kept = {k: v for k, v in replayed["payload"].items() if k not in own}
    assert kept == dict(
        {k: v for k, v in original["payload"].items() if k not in own}, replayed=True
    )
    assert "for source orders of SensorFlow branch user.tester" in proc.stdout
    assert [h["kind"] for h in work.load("orders").history] == ["first", "replayed"]
    assert [h["kind"] for h in work.load("events").history] == ["first"]

    # A baseline accepted without an event: nothing to replay for that source, and it says so.
    proc = work.cli("reset", "--to-current", "--source", "events", "--yes")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    proc = work.cli("replay", "--source", "events")
    assert proc.returncode == 2
    assert "Nothing to replay: the baseline of source events of SensorFlow branch" in proc.stderr
    assert len(webhook.events) == 3
