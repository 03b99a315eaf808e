"""``flowproject dev``: sensor -> event -> triggered StarterFlow, on loopback S3.

The dev loop runs as a user runs it (``python -m flowproject dev``); the triggered runs are
read back with the Metaflow client, in a separate process pinned to the test's datastore.
"""

import json
import os
import re
import signal
import subprocess
import sys
import textwrap
import time

import pytest
from configs import local_metaflow_home
from conftest import REPO, of_branch, s3_config, starter_runs

from flowproject.argo_sensor import trigger_rules
from flowproject.devloop import DevLoop, payload_arguments


def dev(flow_runner, *args):
    """``python -m flowproject dev --config <config> --root REPO ARGS`` in the test's folder."""
    argv = [sys.executable, "-m", "flowproject", "dev", "--config", flow_runner.config_path]
    argv += ["--root", REPO, "--logs", os.path.join(flow_runner.workdir, "logs")] + list(args)
    return subprocess.run(
        argv,
        cwd=flow_runner.workdir,
        env=flow_runner.env,
        capture_output=True,
        text=True,
        timeout=600,
    )


@pytest.fixture
def dev_env(flow_runner):
    flow_runner.env["METAFLOW_DATASTORE_SYSROOT_LOCAL"] = flow_runner.workdir
    return flow_runner


def _ok(proc):
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout


def starter_run_folders(flow_runner):
    """How many StarterFlow runs of any branch the test's datastore holds (the local
    metadata's run folders: a run that started, whatever its outcome, has one). Where only
    the number matters, this listing stands in for a Metaflow client process
    (``starter_runs``), which reads the same folders."""
    folder = os.path.join(flow_runner.workdir, ".metaflow", "StarterFlow")
    if not os.path.isdir(folder):
        return 0
    return sum(1 for name in os.listdir(folder) if name.isdigit())


@pytest.mark.e2e
def test_each_announced_value_starts_one_starter_run_with_that_value_in_its_branch_only(
    dev_env, webhook, s3_client, bucket
):
    """One test for what were two, each starting from the same first check of a dev loop:
    the value each branch announces starts one StarterFlow run with that value, and an event
    of one branch never starts another branch's flow."""
    flow_runner = dev_env
    s3_client.put_object(Bucket=bucket, Key="events/part-0.parquet", Body=b"rows-0")
    flow_runner.write_config(s3_config(bucket, "events/", "files_metadata"))

    # Two checks back to back: the first announces, the second finds nothing new.
    out = _ok(dev(flow_runner, "--checks", "2", "--every", "0"))
    runs = starter_runs(flow_runner)  # every branch's, read once
    (first,) = of_branch(runs, "user.tester")
    assert first["successful"]
    assert first["data_version"].startswith("sha256:")
    assert first["trained_on"] == first["data_version"]
    assert "flowproject-dev" in first["tags"]
    # The timeline: check -> decision -> event -> triggered run id -> its result.
    announced, unchanged = out.split("decided: ")[1:3]
    assert announced.startswith("first check")
    assert "event mfns.testproject.user.tester.data_updated" in announced
    assert "data_version=%s" % first["data_version"] in announced
    assert "StarterFlow/%s succeeded" % first["id"] in out
    assert unchanged.startswith("unchanged") and "no event" in unchanged
    assert runs == [first]  # no run of test.beta, or of any other branch

    # Another branch's first check announces in that branch only: its own run starts, the
    # user branch's flow does not. (That the user branch's baseline is untouched by it:
    # test_delivery.py::test_at_least_once_and_branch_isolation, steps 5 and 6. A changed
    # value through the dev loop's check starting a run that reads it:
    # test_downstream.py::test_s3_manifests_reach_the_runs_and_duplicate_deliveries_never_proceed.)
    out_b = _ok(dev(flow_runner, "--checks", "1", "--branch", "beta"))
    assert "event mfns.testproject.test.beta.data_updated" in out_b
    assert "user.tester" not in out_b
    runs = starter_runs(flow_runner)
    (beta,) = of_branch(runs, "test.beta")
    assert beta["successful"] and beta["data_version"] == first["data_version"]
    assert of_branch(runs, "user.tester") == [first] and len(runs) == 2

    # The webhook of the conftest was never used: the dev loop brings its own.
    assert webhook.events == []


@pytest.mark.e2e
def test_a_failing_check_exits_non_zero_naming_it(dev_env):
    flow_runner = dev_env
    flow_runner.write_config(s3_config("bucket-that-does-not-exist", "events/", "files_metadata"))
    proc = dev(flow_runner, "--checks", "1")
    assert proc.returncode == 1
    assert "FAILED: check 1 (SensorFlow/" in proc.stdout
    assert starter_run_folders(flow_runner) == 0


def processes_with(marker):
    """Pids of the processes whose environment contains ``marker`` (this test's folder)."""
    pids = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit() or int(pid) == os.getpid():
            continue
        try:
            with open("/proc/%s/environ" % pid, "rb") as f:
                if marker.encode() in f.read():
                    pids.append(int(pid))
        except OSError:
            pass
    return pids


def interruptible():
    """In the child, before exec: Ctrl-C (SIGINT) as in a terminal. A test run started in the
    background by a non-interactive shell inherits SIGINT ignored, and Python then installs no
    KeyboardInterrupt handler, so the dev loop would never see the test's Ctrl-C."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


@pytest.mark.e2e
@pytest.mark.skipif(not os.path.isdir("/proc"), reason="reads /proc to find processes")
def test_ctrl_c_stops_every_run_it_started(dev_env, s3_client, bucket):
    flow_runner = dev_env
    s3_client.put_object(Bucket=bucket, Key="events/part-0.parquet", Body=b"rows-0")
    flow_runner.write_config(s3_config(bucket, "events/", "files_metadata"))
    argv = [sys.executable, "-m", "flowproject", "dev", "--config", flow_runner.config_path]
    argv += ["--root", REPO, "--every", "600", "--logs", os.path.join(flow_runner.workdir, "logs")]
    proc = subprocess.Popen(
        argv,
        cwd=flow_runner.workdir,
        env=flow_runner.env,
        stdout=subprocess.PIPE,
        text=True,
        preexec_fn=interruptible,
    )
    try:
        for line in proc.stdout:
            if "started StarterFlow" in line:
                break
        proc.send_signal(signal.SIGINT)
        rest = proc.stdout.read()
        assert proc.wait(timeout=60) == 130
    finally:
        if proc.poll() is None:
            proc.kill()
    assert "interrupted: stopping every run the dev loop started" in rest
    assert processes_with(flow_runner.workdir) == []


@pytest.mark.e2e
def test_the_readme_consumer_skips_a_change_it_already_processed(tmp_path):
    """The de-duplicating example of docs/delivery.md, delivered the same event twice by the
    dev loop."""
    with open(os.path.join(REPO, "docs", "delivery.md")) as f:
        readme = f.read()
    example = re.search(r"```python\n(from itertools import islice\n.*?)```", readme, re.S)
    root, work = tmp_path / "root", tmp_path / "work"
    root.mkdir()
    work.mkdir()
    (root / "trainflow.py").write_text(
        example.group(1) + '\nif __name__ == "__main__":\n    TrainFlow()\n'
    )
    env = dict(
        os.environ,
        METAFLOW_USER="tester",
        METAFLOW_HOME=local_metaflow_home(tmp_path / "home"),
        METAFLOW_DATASTORE_SYSROOT_LOCAL=str(work),
    )
    loop = DevLoop(root=str(root), env=env, cwd=str(work), log_dir=str(tmp_path / "logs"))
    loop.discover()
    event = {
        "name": "mfns.flowproject.user.tester.data_updated",
        "payload": {"data_version": "v1", "change_id": "c1"},
    }
    for _ in range(2):
        assert loop.deliver(event) == 1
        loop.reap(wait=True)
    first, second = [open(run.log_path).read() for run in loop.runs]
    assert [run.returncode for run in loop.runs] == [0, 0]
    assert "training on v1" in first
    assert "change c1 was already processed; nothing to do" in second
    assert "training on" not in second


def test_help_on_every_command():
    for args in ([], ["dev"]):
        proc = subprocess.run(
            [sys.executable, "-m", "flowproject"] + args + ["--help"],
            cwd=REPO,
            capture_output=True,
            text=True,
        )
        assert proc.returncode == 0, proc.stderr
        assert "Usage: flowproject" in proc.stdout
    assert "--checks" in proc.stdout and "--every" in proc.stdout


def test_an_invalid_config_exits_2_with_its_problems(tmp_path):
    config = tmp_path / "flowconfig.toml"
    config.write_text('project_name = "p"\n[data]\ntype = "ftp"\n')
    (tmp_path / "tmp").mkdir()
    proc = subprocess.run(
        [sys.executable, "-m", "flowproject", "dev", "--config", str(config), "--root", REPO],
        cwd=str(tmp_path),
        env=dict(os.environ, PYTHONPATH=REPO, TMPDIR=str(tmp_path / "tmp")),
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "Invalid flowconfig.toml" in proc.stderr
    assert "data.type" in proc.stderr
    assert os.listdir(tmp_path / "tmp") == []  # no empty log folder left behind


# ------------------------------------------------------------------ Metaflow's mapping rules

RULE = {"event": "e", "parameters": {"data_version": "data_version"}, "required": []}


def test_a_present_key_is_passed_as_the_parameter_spelled_as_declared():
    rule = {"event": "e", "parameters": {"alpha": "a", "count": "n"}, "required": []}
    args = payload_arguments(rule, {"a": "x", "n": 3}, ["Alpha", "count"])
    assert args == ["--Alpha", "x", "--count", "3"]


def test_an_absent_optional_key_keeps_the_default():
    assert payload_arguments(RULE, {"other": "x"}, ["data_version"]) == []


def test_an_absent_required_key_starts_nothing():
    rule = dict(RULE, required=["data_version"])
    assert payload_arguments(rule, {"other": "x"}, ["data_version"]) is None


def test_an_event_of_another_branch_starts_nothing(tmp_path):
    description = {
        "flow": "StarterFlow",
        "parameters": {"data_version": {"required": False, "default": '""'}},
        "triggers": [
            {
                "name": "mfns.p.test.alpha.data_updated",
                "parameters": {"data_version": "data_version"},
            }
        ],
    }
    loop = DevLoop(root=REPO, log_dir=str(tmp_path))
    loop.flows = {"starterflow.py": dict(description, rules=trigger_rules(description))}
    started = []
    loop.start = lambda *args: started.append(args)
    event = {"name": "mfns.p.test.beta.data_updated", "payload": {"data_version": "v1"}}
    assert loop.deliver(event) == 0
    assert started == []
    assert loop.deliver(dict(event, name="mfns.p.test.alpha.data_updated")) == 1
    assert started[0][3] == ["--data_version", "v1"]


def test_the_dev_loop_reads_triggers_with_metaflows_own_processing(tmp_path):
    """Automatic mapping for one event without explicit mapping; names lowercased."""
    flow = tmp_path / "mixedflow.py"
    flow.write_text(
        textwrap.dedent(
            """\
            from metaflow import FlowSpec, Parameter, project, step, trigger

            @project(name="p")
            @trigger(event="raw_ready")
            class MixedFlow(FlowSpec):
                Snapshot = Parameter("Snapshot", default="latest")
                rows = Parameter("rows", type=int, required=True)

                @step
                def start(self):
                    self.next(self.end)

                @step
                def end(self):
                    pass

            if __name__ == "__main__":
                MixedFlow()
            """
        )
    )
    env = dict(os.environ, METAFLOW_USER="tester", METAFLOW_HOME=str(tmp_path / "home"))
    loop = DevLoop(
        root=str(tmp_path), branch="alpha", env=env, log_dir=str(tmp_path), cwd=str(tmp_path)
    )
    (description,) = loop.discover().values()
    (rule,) = description["rules"]
    assert rule == {
        "event": "raw_ready",
        "parameters": {"snapshot": "snapshot", "rows": "rows"},
        "required": ["rows"],
    }
    assert payload_arguments(rule, {"snapshot": "s1", "rows": 5}, description["parameters"]) == [
        "--rows",
        "5",
        "--Snapshot",
        "s1",
    ]


@pytest.mark.parametrize(
    "schedule, after, expected",
    [
        ("@every 90s", 1000.0, 1090.0),  # Argo's interval descriptor: croniter cannot read it
        ("@every 1h30m", 0.0, 5400.0),
        ("@every 500ms", 0.0, 1.0),  # robfig/cron rounds up to one second
        ("@daily", 1000.0, 86400.0),
        ("*/5 * * * *", 0.0, 300.0),
    ],
)
def test_the_loop_checks_on_every_schedule_the_config_accepts(tmp_path, schedule, after, expected):
    config = tmp_path / "flowconfig.toml"
    config.write_text(
        s3_config("bucket", "events/", "files_metadata").replace("*/5 * * * *", schedule)
    )
    loop = DevLoop(root=REPO, config=str(config), log_dir=str(tmp_path))
    assert loop.next_check_at(after) == expected


# ------------------------------------------------------------------ received, never delivered

HOLD = """
        hold = os.environ.get("HOLD_IN_END")
        if hold:  # the test's moment: published and committed, `end` still running
            open(hold, "w").close()
            time.sleep(600)
"""


def root_with_a_sensor_that_holds_in_end(tmp_path):
    """A copy of the repository's flows whose SensorFlow, with HOLD_IN_END=<file> set, waits
    in ``end`` (after announce_change published and committed) once it has created <file>."""
    root = tmp_path / "root"
    root.mkdir()
    with open(os.path.join(REPO, "sensorflow.py")) as f:
        sensor = f.read()
    end = "        self.fail_if_unpublished()\n"
    assert sensor.count(end) == 1
    sensor = "import os\nimport time\n" + sensor.replace(end, HOLD + end)
    (root / "sensorflow.py").write_text(sensor)
    with open(os.path.join(REPO, "starterflow.py")) as f:
        (root / "starterflow.py").write_text(f.read())
    return str(root)


def interrupt_in_end(flow_runner, root):
    """``flowproject dev`` stopped by a real SIGINT while the sensor run is in ``end``."""
    hold = os.path.join(flow_runner.workdir, "in-end")
    if os.path.exists(hold):
        os.unlink(hold)
    argv = [sys.executable, "-m", "flowproject", "dev", "--config", flow_runner.config_path]
    argv += ["--root", root, "--every", "600", "--logs", os.path.join(flow_runner.workdir, "logs")]
    proc = subprocess.Popen(
        argv,
        cwd=flow_runner.workdir,
        env=dict(flow_runner.env, HOLD_IN_END=hold),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        preexec_fn=interruptible,
    )
    try:
        deadline = time.monotonic() + 300
        while not os.path.exists(hold):
            assert proc.poll() is None, proc.stdout.read()
            assert time.monotonic() < deadline
            time.sleep(0.1)
        proc.send_signal(signal.SIGINT)
        out = proc.stdout.read()
        assert proc.wait(timeout=60) == 130, out
    finally:
        if proc.poll() is None:
            proc.kill()
    return out


def left_for_the_next_dev(flow_runner):
    """The events the next ``flowproject dev`` in the test's folder would deliver (or drop)
    before its first check: ``DevLoop.undelivered()``, which its ``run()`` asks, in-process."""
    return [record["event"]["name"] for _, record in flow_runner.dev_loop().undelivered()]


RECORD_RECEIVED = (
    "import json, os, sys; from flowproject.devloop import DevLoop; "
    "DevLoop(root=sys.argv[1], config=sys.argv[2], env=dict(os.environ), cwd=os.getcwd())"
    ".record_received(json.loads(sys.argv[3]))"
)


def received_by_a_stopped_dev(flow_runner, event):
    """``event`` recorded as received and not delivered by a process that has since exited,
    as a ``flowproject dev`` stopped before delivering leaves it."""
    proc = subprocess.run(
        [sys.executable, "-c", RECORD_RECEIVED, REPO, flow_runner.config_path, json.dumps(event)],
        cwd=flow_runner.workdir,
        env=flow_runner.env,
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stderr


def received_records(flow_runner):
    folder = os.path.join(
        flow_runner.workdir, ".metaflow", "flowproject-dev", "testproject", "user.tester"
    )
    records = []
    for name in sorted(os.listdir(os.path.join(folder, "received"))):
        with open(os.path.join(folder, "received", name)) as f:
            records.append(json.load(f))
    return records


@pytest.mark.e2e
def test_an_event_received_before_ctrl_c_is_delivered_by_the_next_dev(
    dev_env, s3_client, bucket, tmp_path
):
    flow_runner = dev_env
    root = root_with_a_sensor_that_holds_in_end(tmp_path)
    s3_client.put_object(Bucket=bucket, Key="events/part-0.parquet", Body=b"rows-0")
    flow_runner.write_config(s3_config(bucket, "events/", "files_metadata"))

    # Ctrl-C while the sensor run is in `end`: it published and committed, nothing started.
    out = interrupt_in_end(flow_runner, root)
    assert "interrupted: stopping every run the dev loop started" in out
    assert "not delivered: mfns.testproject.user.tester.data_updated" in out
    assert "started StarterFlow" not in out
    assert starter_run_folders(flow_runner) == 0
    (record,) = received_records(flow_runner)
    assert record["delivered_at"] is None and record["event"]["name"].endswith("data_updated")
    value = record["event"]["payload"]["data_version"]
    assert left_for_the_next_dev(flow_runner) == [record["event"]["name"]]

    # The next dev names the event, delivers it, and its check is unchanged.
    out = _ok(dev(flow_runner, "--checks", "1"))
    assert "1 event(s) received by an earlier flowproject dev were never delivered" in out
    assert (
        "delivering mfns.testproject.user.tester.data_updated (change_id=%s)"
        % (record["event"]["payload"]["change_id"])
        in out
    )
    assert "decided: unchanged" in out
    (run,) = starter_runs(flow_runner, "user.tester")
    assert run["successful"] and run["data_version"] == value
    (record,) = received_records(flow_runner)
    assert record["delivered_at"] and record["started"] == ["StarterFlow"]

    # Delivered once: nothing is left for the next dev to deliver. Asked in-process, not by a
    # third dev: that one's unchanged check would only repeat the one above.
    assert left_for_the_next_dev(flow_runner) == []

    # Another event received and never delivered; --drop-undelivered drops it, saying so.
    # Left by a short process that records it as a dev loop's webhook does and exits
    # (DevLoop.record_received): a second Ctrl-C in `end` would only repeat the one above.
    received_by_a_stopped_dev(flow_runner, record["event"])
    assert left_for_the_next_dev(flow_runner) == [record["event"]["name"]]
    out = _ok(dev(flow_runner, "--checks", "1", "--drop-undelivered"))
    assert "1 event(s) received by an earlier flowproject dev were never delivered" in out
    assert "dropped (--drop-undelivered), no flow started: mfns.testproject" in out
    assert "decided: unchanged" in out
    assert starter_run_folders(flow_runner) == 1
    assert [bool(r["dropped_at"]) for r in received_records(flow_runner)] == [False, True]
    assert left_for_the_next_dev(flow_runner) == []  # dropped once: not offered again


@pytest.mark.e2e
def test_replay_after_a_reset_finds_the_new_announcement_also_of_a_run_stopped_in_end(
    dev_env, webhook, s3_client, bucket, tmp_path
):
    """reset, a first check that announces again, replay: the baseline the state holds is
    replayed, also when its run was stopped in ``end`` after publishing and committing."""
    flow_runner = dev_env
    root = root_with_a_sensor_that_holds_in_end(tmp_path)
    s3_client.put_object(Bucket=bucket, Key="events/part-0.parquet", Body=b"rows-0")
    flow_runner.write_config(s3_config(bucket, "events/", "files_metadata"))

    def cli(*args):
        argv = [sys.executable, "-m", "flowproject"] + list(args)
        argv += ["--config", flow_runner.config_path]
        return subprocess.run(
            argv, cwd=flow_runner.workdir, env=flow_runner.env, capture_output=True, text=True
        )

    def state():
        """The branch's state object, as the sensor wrote it (what `status --json` shows of
        it: test_cli_state.py)."""
        path = os.path.join(
            flow_runner.workdir, ".metaflow", "SensorFlow", "sensor_state", "testproject"
        )
        with open(os.path.join(path, "user.tester.json")) as f:
            return json.load(f)

    # The reported sequence: a first check, reset --yes, a first check (in `flowproject dev`,
    # which also started the flow), replay. Here the checks are plain sensor runs, to the
    # test's webhook: replay reads the state and the announcing run, whoever started it. (A
    # dev loop's sensor run: the second part; the flow a dev loop's first check starts:
    # test_each_announced_value_starts_one_starter_run_with_that_value_in_its_branch_only.)
    first_check = flow_runner.run()
    assert first_check.returncode == 0, first_check.stdout + first_check.stderr
    assert len(webhook.events) == 1  # it announced
    assert cli("reset", "--yes").returncode == 0
    again = flow_runner.run()
    assert again.returncode == 0, again.stdout + again.stderr
    assert "first check" in again.stdout + again.stderr
    assert len(webhook.events) == 2  # announced again
    baseline = state()["baseline"]
    change = baseline["change_id"]
    assert baseline["run"] == "SensorFlow/%s" % webhook.events[1]["payload"]["run_id"]
    proc = cli("replay")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "Replayed mfns.testproject.user.tester.data_updated (change %s)" % change in (
        proc.stdout
    )

    # Again, the announcing run stopped in `end` (published and committed, end killed).
    assert cli("reset", "--yes").returncode == 0
    interrupt_in_end(flow_runner, root)
    baseline = state()["baseline"]
    assert baseline["change_id"] == change and baseline["run"]
    proc = cli("replay")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "Replayed mfns.testproject.user.tester.data_updated (change %s)" % change in (
        proc.stdout
    )
    replayed = [e for e in webhook.events if e["payload"].get("replayed")]
    assert [e["payload"]["change_id"] for e in replayed] == [change, change]
    assert replayed[-1]["payload"]["run_id"] == baseline["run"].rpartition("/")[2]


def test_the_timeline_shows_event_names_and_payloads_as_text_not_markup(tmp_path):
    import io

    from rich.console import Console

    description = {
        "flow": "StarterFlow",
        "parameters": {"data_version": {"required": False, "default": '""'}},
        "triggers": [{"name": "e[/red]", "parameters": {"data_version": "data_version"}}],
    }
    shown = io.StringIO()
    console = Console(file=shown, width=200, highlight=False, soft_wrap=True)
    loop = DevLoop(root=REPO, log_dir=str(tmp_path), console=console)
    loop.flows = {"starterflow.py": dict(description, rules=trigger_rules(description))}
    started = []
    loop.start = lambda *args: started.append(args)
    event = {"name": "e[/red]", "payload": {"data_version": "[/bold]v1", "change_id": "[b]c"}}
    assert loop.deliver(event) == 1
    assert loop.deliver(dict(event, name="other[/i]")) == 0
    out = shown.getvalue()
    assert "event e[/red] (change_id=[b]c, data_version=[/bold]v1)" in out
    assert "no flow listens to other[/i]" in out
    assert started[0][3] == ["--data_version", "[/bold]v1"]
