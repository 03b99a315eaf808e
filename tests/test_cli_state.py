"""``flowproject status``, ``reset`` and ``replay`` on a real local datastore.

The sensor runs for real against loopback S3 and a loopback webhook; the commands run as a
user runs them (``python -m flowproject ...``) in the test's folder, with its datastore.
"""

import json
import os
import subprocess
import sys

import pytest
from configs import local_metaflow_home
from conftest import REPO, s3_config, use_loopback_s3
from test_s3_faults import faulty_proxy, proxy  # noqa: F401  (fixtures)

EVENT = "mfns.testproject.user.tester.data_updated"
STATE = ".metaflow/SensorFlow/sensor_state/testproject/user.tester.json"


def cli(flow_runner, *args, input=None):
    """``python -m flowproject ARGS --config <the test's config>`` in the test's folder."""
    argv = [sys.executable, "-m", "flowproject"] + list(args)
    return subprocess.run(
        argv,
        cwd=flow_runner.workdir,
        env=flow_runner.env,
        capture_output=True,
        text=True,
        input=input,
        timeout=300,
    )


def check(flow_runner, webhook):
    """Run the sensor once; return the events it published (asserting the run succeeded)."""
    before = len(webhook.events)
    result = flow_runner.run()
    assert result.returncode == 0, result.stdout + result.stderr
    return webhook.events[before:]


def status_json(flow_runner):
    proc = cli(flow_runner, "status", "--json", "--config", flow_runner.config_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return json.loads(proc.stdout)


def stored_status(flow_runner):
    """What ``status --json`` shows of the branch's state (``operations.status_of``, the code
    it runs), read in this process: for the re-reads after a command, once the command's own
    ``--json`` output is shown (the first read of the steering test)."""
    from flowproject.operations import status_of

    return status_of(_store(flow_runner.workdir))


@pytest.fixture
def state_env(flow_runner):
    # The flows and the commands use one datastore, whatever folder they run in.
    flow_runner.env["METAFLOW_DATASTORE_SYSROOT_LOCAL"] = flow_runner.workdir
    return flow_runner


@pytest.mark.e2e
def test_status_replay_and_reset_steer_a_real_sensor_and_replay_advice_works(
    state_env, webhook, s3_client, bucket
):
    """status (--json keeps values whole, the table fits 80 columns), replay (its no-webhook
    advice is a command that works; the history records the whole value) and reset, on one
    real sensor's state."""
    import shlex

    flow_runner = state_env
    s3_client.put_object(Bucket=bucket, Key="events/part-0.parquet", Body=b"rows-0")
    flow_runner.write_config(s3_config(bucket, "events/", "files_metadata"))
    (first,) = check(flow_runner, webhook)
    assert first["payload"]["previous_value"] == ""
    value, change = first["payload"]["data_version"], first["payload"]["change_id"]
    announcing_run = "SensorFlow/%s" % first["payload"]["run_id"]
    assert len(value) > 40  # the sensor stores history values shortened to 40 characters

    # status --json: stable keys a script can rely on.
    (status,) = status_json(flow_runner)["states"]
    assert status["flow"] == "SensorFlow"
    assert status["project"] == "testproject"
    assert status["branch"] == "user.tester"
    assert status["error"] is None
    assert status["source"]["identity"]["key"] == "events/"
    assert status["baseline"]["value"] == value
    assert status["baseline"]["change_id"] == change
    assert status["baseline"]["run"] == announcing_run
    assert status["baseline"]["announced_at"]
    assert status["last_check"]["kind"] == "first"
    assert status["last_check"]["published"] is True
    assert status["pending"] is None
    assert status["failed_publishes"] == []
    assert status["claim"] is None and status["reset"] is None
    assert [h["kind"] for h in status["history"]] == ["first"]
    # JSON is for scripts: every value whole, as the baseline's is.
    assert status["last_check"]["value"] == value
    assert [h["value"] for h in status["history"]] == [value]
    assert not any("value_shortened" in h for h in status["history"])

    # The table for people, which still fits 80 columns.
    proc = cli(flow_runner, "status", "--config", flow_runner.config_path)
    assert proc.returncode == 0, proc.stderr
    assert "SensorFlow  project testproject  branch user.tester" in proc.stdout
    assert "baseline    %s" % value in proc.stdout
    assert "announced" in proc.stdout and announcing_run in proc.stdout
    assert "last check  first, published" in proc.stdout
    assert "decision" in proc.stdout  # the history table's header
    (row,) = [line for line in proc.stdout.splitlines() if line.startswith("20")]
    assert value[:17] + "..." in row and value not in row

    # No webhook: the advice is a command that works, not the flow's `--dry-run True`; it is
    # also the one dry run here (what it would publish, nothing published).
    events = len(webhook.events)
    env = {k: v for k, v in flow_runner.env.items() if k != "METAFLOW_ARGO_EVENTS_WEBHOOK_URL"}
    argv = [sys.executable, "-m", "flowproject", "replay", "--config", flow_runner.config_path]
    proc = subprocess.run(argv, cwd=flow_runner.workdir, env=env, capture_output=True, text=True)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "Event not published: METAFLOW_ARGO_EVENTS_WEBHOOK_URL is not set" in proc.stderr
    assert "--dry-run True" not in proc.stderr
    advised = proc.stderr.strip().rpartition("without publishing: ")[2]
    assert advised == "flowproject replay --dry-run --config %s" % shlex.quote(
        flow_runner.config_path
    )
    argv = [sys.executable, "-m", "flowproject"] + shlex.split(advised)[1:]
    proc = subprocess.run(argv, cwd=flow_runner.workdir, env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "Dry run: would publish %s with" % EVENT in proc.stdout
    assert '"replayed": true' in proc.stdout
    assert len(webhook.events) == events == 1

    # replay: the same event again, marked as a replay, recorded in the history.
    proc = cli(flow_runner, "replay", "--config", flow_runner.config_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    (replayed,) = webhook.events[1:]
    assert replayed["name"] == EVENT
    assert replayed["payload"]["change_id"] == change
    assert replayed["payload"]["data_version"] == value
    assert replayed["payload"]["previous_value"] == ""
    assert replayed["payload"]["replayed"] is True
    assert "replayed" not in first["payload"]
    assert "Replayed %s (change %s) for SensorFlow branch user.tester" % (EVENT, change) in (
        proc.stdout
    )
    status = stored_status(flow_runner)
    assert [h["kind"] for h in status["history"]] == ["first", "replayed"]
    assert status["history"][-1]["by"] == "tester"
    assert status["history"][-1]["value"] == value  # a replay records the whole value too
    assert status["last_check"]["kind"] == "first"  # a replay is not a check
    assert status["baseline"]["change_id"] == change  # a replay moves nothing

    # reset, answered "n": nothing changes.
    state_file = os.path.join(flow_runner.workdir, STATE)
    with open(state_file, "rb") as f:
        before = f.read()
    proc = cli(flow_runner, "reset", "--config", flow_runner.config_path, input="n\n")
    assert proc.returncode == 1
    assert "reset SensorFlow branch user.tester of project testproject" in proc.stdout
    assert "Nothing changed." in proc.stdout
    with open(state_file, "rb") as f:
        assert f.read() == before

    # reset: the next check is a first check although earlier runs announced the value
    # (without the marker the baseline would be recovered from them: no event).
    proc = cli(flow_runner, "reset", "--yes", "--config", flow_runner.config_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "Reset SensorFlow branch user.tester of project testproject" in proc.stdout
    status = stored_status(flow_runner)
    assert status["baseline"] is None and status["reset"]["by"] == "tester"
    (again,) = check(flow_runner, webhook)
    assert again["payload"]["previous_value"] == ""
    assert again["payload"]["data_version"] == value
    assert again["payload"]["change_id"] == change

    # reset --to-current: the source's value now becomes the baseline without an event.
    s3_client.put_object(Bucket=bucket, Key="events/part-1.parquet", Body=b"backfill")
    events = len(webhook.events)
    proc = cli(flow_runner, "reset", "--to-current", "--yes", "--config", flow_runner.config_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "(no event published)" in proc.stdout
    assert len(webhook.events) == events
    status = stored_status(flow_runner)
    assert status["baseline"]["value"] not in (None, value)
    assert status["reset"]["to_current"] is True
    # No check after it: that the flow reads the state this command writes is the check after
    # `reset --yes` above; that a check of an accepted value publishes nothing is test_s3_faults's
    # test_malformed_page_fails_the_run_and_the_next_healthy_run_publishes_nothing.

    # Nothing was announced for the accepted baseline: nothing to replay.
    proc = cli(flow_runner, "replay", "--config", flow_runner.config_path)
    assert proc.returncode == 2
    assert "Nothing to replay" in proc.stderr and "reset --to-current" in proc.stderr
    assert len(webhook.events) == events


def _store(workdir, branch="user.tester"):
    from metaflow.plugins.datastores.local_storage import LocalStorage

    from flowproject.state import StateStore

    storage = LocalStorage(os.path.join(str(workdir), ".metaflow"))
    return StateStore(storage, "SensorFlow", "testproject", branch)


def test_status_without_state_and_of_an_unreadable_state(state_env):
    flow_runner = state_env
    flow_runner.write_config(s3_config("some-bucket", "events/", "files_metadata"))
    proc = cli(flow_runner, "status", "--config", flow_runner.config_path)
    assert proc.returncode == 0, proc.stderr
    assert "No sensor state in %s" % flow_runner.workdir in proc.stdout
    assert "for project testproject" in proc.stdout
    assert status_json(flow_runner)["states"] == []

    path = os.path.join(flow_runner.workdir, STATE)
    os.makedirs(os.path.dirname(path))
    with open(path, "w") as f:
        f.write("{not json")
    (status,) = status_json(flow_runner)["states"]
    assert status["branch"] == "user.tester"
    assert status["error"].startswith("JSONDecodeError")
    assert status["baseline"] is None


def test_reset_is_refused_while_a_run_announces_and_replay_needs_an_event(state_env):
    from flowproject.sensor import SensorState
    from flowproject.state import new_claim

    flow_runner = state_env
    flow_runner.write_config(s3_config("some-bucket", "events/", "files_metadata"))
    store = _store(flow_runner.workdir)
    store.save(SensorState(), None, claim=new_claim("SensorFlow/7", "c0ffee", "v1", 600))
    path = os.path.join(flow_runner.workdir, STATE)
    with open(path, "rb") as f:
        before = f.read()

    proc = cli(flow_runner, "reset", "--yes", "--config", flow_runner.config_path)
    assert proc.returncode == 2
    with open(path, "rb") as f:
        assert f.read() == before

    proc = cli(flow_runner, "replay", "--config", flow_runner.config_path)
    assert proc.returncode == 2
    assert "Nothing to replay: SensorFlow branch user.tester has no announced value" in (
        proc.stderr
    )
    assert "run SensorFlow/7 is announcing change c0ffee right now" in proc.stderr


def test_project_branch_names_the_branch_as_metaflow_does(monkeypatch):
    from flowproject.operations import project_branch

    monkeypatch.delenv("METAFLOW_OWNER", raising=False)
    assert project_branch(user="alice") == "user.alice"
    assert project_branch("feature_x") == "test.feature_x"
    assert project_branch(production=True) == "prod"
    assert project_branch("canary", production=True) == "prod.canary"
    assert project_branch("user.bob") == "user.bob"
    assert project_branch("test.feature_x") == "test.feature_x"


def cli_on_s3(tmp_path, datastore_root, endpoint_url):
    """A function running ``python -m flowproject ARGS`` in ``tmp_path`` with Metaflow's
    datastore on S3 at ``datastore_root``, reached at ``endpoint_url``; it returns the
    finished process."""
    env = dict(
        os.environ,
        METAFLOW_DEFAULT_DATASTORE="s3",
        METAFLOW_DATASTORE_SYSROOT_S3=datastore_root,
        METAFLOW_S3_ENDPOINT_URL=endpoint_url,
        AWS_ENDPOINT_URL_S3=endpoint_url,
        METAFLOW_HOME=local_metaflow_home(tmp_path / "metaflow-home"),
        METAFLOW_USER="tester",
        AWS_ACCESS_KEY_ID="testing",
        AWS_SECRET_ACCESS_KEY="testing",
        AWS_DEFAULT_REGION="us-east-1",
        PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""),
    )

    def run(*args):
        return subprocess.run(
            [sys.executable, "-m", "flowproject"] + list(args),
            cwd=str(tmp_path),
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )

    return run


def test_status_and_reset_on_the_s3_datastore(tmp_path, s3_server, s3_client, bucket):
    """The commands use the datastore of Metaflow's configuration: here S3."""
    key = "metaflow/SensorFlow/sensor_state/testproject/test.x.json"
    scope = {"flow": "SensorFlow", "project": "testproject", "branch": "test.x"}
    baseline = {"value": "v1", "fingerprint": "f1", "change_id": "c1", "run": "SensorFlow/1"}
    history = [
        {"at": "2026-01-01T00:00:00+00:00", "kind": "first", "published": True},
        {"at": "2026-01-01T00:05:00+00:00", "kind": "changed", "published": False, "failed": True},
        {"at": "2026-01-01T00:10:00+00:00", "kind": "settling", "published": False},
    ]
    pending = {"value": "v2", "fingerprint": "f2", "seen": 1, "first_seen_at": "2026-01-01T00:10"}
    doc = {"scope": scope, "baseline": baseline, "pending": pending, "history": history}
    s3_client.put_object(Bucket=bucket, Key=key, Body=json.dumps(doc).encode())
    run = cli_on_s3(tmp_path, "s3://%s/metaflow" % bucket, s3_server.endpoint_url)

    proc = run("status", "--project", "testproject", "--json")
    assert proc.returncode == 0, proc.stderr
    (status,) = json.loads(proc.stdout)["states"]
    assert status["location"] == "s3://%s/%s" % (bucket, key)
    assert status["branch"] == "test.x" and status["baseline"]["value"] == "v1"
    assert status["pending"] == {"value": "v2", "seen": 1, "first_seen_at": "2026-01-01T00:10"}
    assert [h["at"] for h in status["failed_publishes"]] == ["2026-01-01T00:05:00+00:00"]
    assert status["last_check"]["kind"] == "settling"
    proc = run("status", "--project", "testproject")
    assert proc.returncode == 0, proc.stderr
    assert "settling    v2 seen unchanged 1 time(s) since 2026-01-01T00:10" in proc.stdout
    assert "failed      1 publish(es), last at 2026-01-01T00:05:00+00:00" in proc.stdout
    assert "changed    FAILED" in proc.stdout

    proc = run("reset", "--yes", "--project", "testproject", "--branch", "x")
    assert proc.returncode == 0, proc.stderr
    assert "Reset SensorFlow branch test.x of project testproject" in proc.stdout
    marker = json.loads(s3_client.get_object(Bucket=bucket, Key=key)["Body"].read())
    assert marker["baseline"] is None and marker["reset"]["by"] == "tester"
    assert [h["kind"] for h in marker["history"]][-1] == "reset"
    assert marker["pending"] is None


def test_listing_a_folder_on_s3_agrees_with_metaflows_listing(
    s3_server, s3_client, bucket, monkeypatch
):
    """find_states lists S3 folders with one ListObjectsV2 call per page (Metaflow's listing
    starts a helper process per call): the same names and kinds as Metaflow's, page by page."""
    from metaflow.plugins.datastores.s3_storage import S3Storage

    from flowproject.state import list_folder

    use_loopback_s3(monkeypatch, s3_server.endpoint_url)
    keys = ["mf/F/sensor_state/p/b%d.json" % i for i in range(5)]
    keys += ["mf/F/sensor_state/p/two/<b>one</b>.json", "mf/F/sensor_state/p/two/x y.json"]
    keys += ["mf/F/1/start/0.json", "mf/G/sensor_state/_/main.json", "mf/top.json", "other/k"]
    for key in keys:
        s3_client.put_object(Bucket=bucket, Key=key, Body=b"{}")
    storage = S3Storage("s3://%s/mf" % bucket)
    folders = ["", "F/sensor_state/p", "F/sensor_state/p/two/", "no"]
    listed = storage.list_content(folders)  # one helper process for the four folders
    for folder in folders:
        theirs = sorted(
            (e.path.rstrip("/").split("/")[-1], e.is_file)
            for e in listed
            if e.path.rstrip("/").rpartition("/")[0] == folder.rstrip("/")
        )
        assert list_folder(storage, folder) == theirs, folder
        assert list_folder(storage, folder, page_size=2) == theirs, folder  # several pages
    assert list_folder(storage, "F/sensor_state/p", page_size=2) == [
        ("b%d.json" % i, True) for i in range(5)
    ] + [("two", False)]
    assert list_folder(storage, "") == [("F", False), ("G", False), ("top.json", True)]


def test_a_listing_the_store_refuses_or_spoils_is_an_error_not_an_empty_datastore(
    proxy, s3_client, bucket, tmp_path, monkeypatch
):
    """status (and a teardown's delete-state) must not take a failed listing for "no state"."""
    from metaflow.plugins.datastores.s3_storage import S3Storage

    from flowproject.exceptions import StateError
    from flowproject.operations import find_states

    for name, value in dict(
        AWS_ENDPOINT_URL_S3=proxy.endpoint_url,
        AWS_ACCESS_KEY_ID="testing",
        AWS_SECRET_ACCESS_KEY="testing",
        AWS_DEFAULT_REGION="us-east-1",
    ).items():
        monkeypatch.setenv(name, value)
    key = "mf/SensorFlow/sensor_state/p/test.x.json"
    s3_client.put_object(Bucket=bucket, Key=key, Body=b"{}")
    storage = S3Storage("s3://%s/mf" % bucket)
    assert [s.path for s in find_states(storage)] == [key[len("mf/") :]]

    proxy.deny(bucket)  # the role lost s3:ListBucket
    with pytest.raises(StateError) as denied:
        find_states(storage)
    assert str(denied.value).startswith("Could not list the sensor states in s3://%s/mf" % bucket)
    assert "AccessDenied" in str(denied.value)
    proc = cli_on_s3(tmp_path, "s3://%s/mf" % bucket, proxy.endpoint_url)(
        "status", "--project", "p"
    )
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "Could not list the sensor states in s3://%s/mf" % bucket in proc.stderr
    assert "Traceback" not in proc.stderr and "No sensor state" not in proc.stdout

    proxy.allow(bucket)
    spoiled_pages = 0
    for fault in ("empty_body", "no_is_truncated", "wrong_key_count", "truncated_without_token"):
        proxy.inject(fault)  # a 200 that is no ListObjectsV2 answer, as a proxy may send
        with pytest.raises(StateError) as spoiled:
            find_states(storage)
        assert str(spoiled.value).startswith("Could not list the sensor states in s3://")
        assert "the store answered with " in str(spoiled.value), fault
        spoiled_pages += proxy.spoiled
    assert spoiled_pages == 4
    assert [s.path for s in find_states(storage)] == [key[len("mf/") :]]


def test_a_reset_marker_is_honoured_without_recovering_from_runs(tmp_path, monkeypatch):
    import flowproject.state as state_module
    from flowproject.operations import reset_marker

    def recover(*args):
        raise AssertionError("a reset marker must not be recovered from runs")

    monkeypatch.setattr(state_module, "recover_from_runs", recover)
    store = _store(tmp_path)
    store.save(reset_marker("tester"), None)
    state, version = store.load_versioned()
    assert state.baseline is None and state.reset["by"] == "tester" and version


BAD_CONFIG = 'project_name = "p"\n[data]\ntype = "ftp"\n'


def test_a_config_error_names_the_file_read(tmp_path):
    """Not "Invalid flowconfig.toml" for a file of another name (CLI and flow runs)."""
    (tmp_path / "bad1.toml").write_text(BAD_CONFIG)
    (tmp_path / "flowconfig.toml").write_text('project_name = "p"\n')  # also invalid
    home = local_metaflow_home(tmp_path / "home")
    env = dict(os.environ, METAFLOW_USER="tester", METAFLOW_HOME=home)
    env["PYTHONPATH"] = REPO + os.pathsep + env.get("PYTHONPATH", "")
    bad = str(tmp_path / "bad1.toml")  # status by its full path, replay and the flow by its name
    runs = {
        "status": [sys.executable, "-m", "flowproject", "status", "--config", bad],
        "replay": [sys.executable, "-m", "flowproject", "replay", "--config", "bad1.toml"],
        "flow": [sys.executable, os.path.join(REPO, "starterflow.py")]
        + ["--config", "flowconfig", "bad1.toml", "run"],
    }
    for what, argv in runs.items():
        proc = subprocess.run(argv, cwd=str(tmp_path), env=env, capture_output=True, text=True)
        output = proc.stdout + proc.stderr
        assert proc.returncode != 0, what
        assert "Invalid bad1.toml" in output, (what, output)
        assert "Invalid flowconfig.toml" not in output, (what, output)
        assert "data.type" in output, (what, output)
        if what == "status":
            assert "Invalid bad1.toml (%s)" % bad in proc.stderr


def test_reading_state_creates_no_datastore_folder(tmp_path):
    """status and replay where no .metaflow exists: they say where they looked, create none."""
    work = tmp_path / "elsewhere"
    work.mkdir()
    env = {k: v for k, v in os.environ.items() if k != "METAFLOW_DATASTORE_SYSROOT_LOCAL"}
    env.update(METAFLOW_USER="tester", METAFLOW_HOME=local_metaflow_home(tmp_path / "home"))
    env.update(METAFLOW_DEFAULT_DATASTORE="local", METAFLOW_DEFAULT_METADATA="local")
    env["PYTHONPATH"] = REPO + os.pathsep + env.get("PYTHONPATH", "")

    def run(*args, **extra):
        return subprocess.run(
            [sys.executable, "-m", "flowproject"] + list(args),
            cwd=str(work),
            env=dict(env, **extra),
            capture_output=True,
            text=True,
            timeout=120,
        )

    looked = "no .metaflow folder in %s or any folder above it" % work
    proc = run("status", "--project", "testproject")
    assert proc.returncode == 0, proc.stderr
    assert "No sensor state: " + looked in proc.stdout
    proc = run("status", "--project", "testproject", "--json")
    assert proc.returncode == 0, proc.stderr
    shown = json.loads(proc.stdout)
    assert shown["datastore"] is None and shown["states"] == [] and looked in shown["error"]
    proc = run("replay", "--project", "testproject")
    assert proc.returncode == 2
    assert "No datastore: " + looked in proc.stderr
    assert not (work / ".metaflow").exists()

    # A datastore named by METAFLOW_DATASTORE_SYSROOT_LOCAL that does not exist stays so.
    sysroot = tmp_path / "nowhere"
    proc = run("status", "--project", "testproject", METAFLOW_DATASTORE_SYSROOT_LOCAL=str(sysroot))
    assert proc.returncode == 0, proc.stderr
    assert "No sensor state in %s/.metaflow (no such folder)" % sysroot in proc.stdout
    assert not sysroot.exists() and os.listdir(str(work)) == []


def test_status_reports_a_hand_edited_state_and_shows_stored_text_inert(state_env):
    """A branch name that is rich markup, a run that is a number, ANSI and HTML in values,
    a claim that is not one: each odd field is named, the rest shown, nothing interpreted."""
    flow_runner = state_env
    flow_runner.write_config(s3_config("some-bucket", "events/", "files_metadata"))
    red = "\x1b[31mred\x1b[0m"
    doc = {
        "version": 1,
        "scope": {"flow": "SensorFlow", "project": "testproject", "branch": "user.[/bold]"},
        "baseline": {"value": "<b>v1</b>", "fingerprint": "f1", "change_id": "c1", "run": None},
        "history": [
            {"at": "2026-01-01T00:00:00+00:00", "kind": "first", "run": 123, "value": red},
            {"at": "2026-01-01T00:05:00+00:00", "kind": "[red]x", "by": ["who"], "value": 7},
            {"at": "2026-01-01T00:10:00+00:00", "kind": "unchanged", "run": "SensorFlow/9"},
        ],
        "claim": "garbage",
        "reset": {"at": 5, "by": "tester"},
    }
    path = os.path.join(flow_runner.workdir, STATE)
    os.makedirs(os.path.dirname(path))
    with open(path, "w") as f:
        json.dump(doc, f)
    # The same object as one named source of a multi-source branch (the per-source block).
    named = os.path.join(os.path.dirname(path), "user.tester", "orders.json")
    os.makedirs(os.path.dirname(named))
    with open(named, "w") as f:
        json.dump(dict(doc, scope=dict(doc["scope"], source="orders")), f)

    problems = [
        "history[0].run: expected string or null, found 123 (integer)",
        'history[1].by: expected string or null, found ["who"] (array)',
        "history[1].value: expected string or null, found 7 (integer)",
        "claim: not a claim (run, change_id, expires_at); ignored",
        "reset.at: expected string, found 5 (integer)",
    ]
    for args in ([], ["--source", "default"], ["--source", "orders"]):
        proc = cli(flow_runner, "status", "--all-projects", *args)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        assert "Traceback" not in proc.stderr, proc.stderr
        out = proc.stdout
        assert "branch user.[/bold]" in out
        assert "\x1b" not in out  # ANSI escapes shown as text, never sent to the terminal
        assert "<b>v1</b>" in out  # HTML shown as the text it is
        for problem in problems:
            assert "problem     " + problem in out, (args, out)
    # With --source, the history table: every cell as stored, the escape inert.
    assert "\\x1b[31mred\\x1b[0m" in out and "[red]x" in out and "123" in out

    proc = cli(flow_runner, "status", "--all-projects", "--json")
    assert proc.returncode == 0, proc.stderr
    states = json.loads(proc.stdout)["states"]
    assert len(states) == 2
    for state in states:
        assert state["error"] is None
        assert sorted(state["problems"]) == sorted(problems)
        assert state["branch"] == "user.[/bold]"
        assert state["history"][0]["run"] == 123 and state["history"][0]["value"] == red
