"""Downstream flows waiting for one or several sources of a multi-source sensor.

``@sensor_trigger(source=...)`` / ``@sensor_trigger(sources=[...])``: the validation when the
flow loads, the ``@trigger`` Metaflow processes, and ``flowproject dev`` starting a flow only
once each of its events has arrived since its last start, across invocations.
"""

import json
import os
import re
import shutil
import subprocess
import sys
import textwrap

import pytest
from configs import local_metaflow_home
from conftest import REPO, s3_config

from flowproject import parse_flowconfig
from flowproject.argo_sensor import rules_summary, trigger_rules
from flowproject.devloop import DevLoop
from flowproject.testing import sensor_env
from flowproject.triggers import payload_key_flow_problems, triggering_sources

EXAMPLE = os.path.join(REPO, "examples", "two_source_flow.py")
ORDERS = "mfns.testproject.user.tester.orders_updated"
EVENTS = "mfns.testproject.user.tester.events_updated"


def two_source_config(bucket="some-bucket", project="testproject", events_extra=""):
    """A flowconfig.toml text with two S3 sources, orders/ and events/ of one bucket."""
    return textwrap.dedent(
        """\
        project_name = "%s"
        [sensor]
        cron_schedule = "*/5 * * * *"

        [sources.orders]
        type = "s3"
        bucket = "s3://%s"
        key = "orders/"
        check_mode = "files_metadata"
        event_name = "orders_updated"
        payload_key = "orders_version"

        [sources.events]
        type = "s3"
        bucket = "s3://%s"
        key = "events/"
        check_mode = "files_metadata"
        event_name = "events_updated"
        payload_key = "events_version"
        %s
        """
    ) % (project, bucket, bucket, events_extra)


MULTI = parse_flowconfig(two_source_config())
SINGLE = parse_flowconfig(s3_config("some-bucket", "events/", "files_metadata"))


# ------------------------------------------------------------------ which sources (fast)


def names(watched):
    return [w.name for w in watched]


def test_one_source_or_several_in_the_order_named():
    watched, problems = triggering_sources(MULTI, source="orders")
    assert (names(watched), problems) == (["orders"], [])
    assert watched[0].sensor["payload_key"] == "orders_version"
    watched, problems = triggering_sources(MULTI, sources=["events", "orders"])
    assert (names(watched), problems) == (["events", "orders"], [])
    assert [w.sensor["event_name"] for w in watched] == ["events_updated", "orders_updated"]


def test_the_single_source_form_is_unchanged_and_its_source_may_be_named_default():
    for kwargs in ({}, {"source": "default"}, {"sources": ["default"]}):
        watched, problems = triggering_sources(SINGLE, **kwargs)
        assert (names(watched), problems) == (["default"], [])
        assert watched[0].sensor["payload_key"] == "data_version"


@pytest.mark.parametrize(
    "config, kwargs, expected",
    [
        (
            MULTI,
            {},
            "@sensor_trigger: flowconfig.toml has [sources.<name>] tables; name the source(s): "
            'source="..." or sources=[...]; known: orders, events',
        ),
        (
            MULTI,
            {"source": "order"},
            "@sensor_trigger(source=...): no source named 'order'; flowconfig.toml has: "
            "orders, events",
        ),
        (
            MULTI,
            {"source": "orders", "sources": ["events"]},
            "@sensor_trigger: give source= or sources=, not both",
        ),
        (
            MULTI,
            {"sources": "orders"},
            "@sensor_trigger(sources=...): expected a list of source names, found 'orders'; "
            "to name one, use source='orders'",
        ),
        (MULTI, {"sources": []}, "@sensor_trigger(sources=[]): name at least one source"),
        (
            MULTI,
            {"source": 3},
            "@sensor_trigger(source=...): expected a source name (a string), found 3",
        ),
        (
            SINGLE,
            {"source": "orders"},
            "@sensor_trigger(source=...): no source named 'orders'; flowconfig.toml has one "
            "[data] table, the source 'default' (or write [sources.orders] tables)",
        ),
    ],
)
def test_each_wrong_argument_is_one_line_naming_it(config, kwargs, expected):
    assert triggering_sources(config, **kwargs) == ([], [expected])


def test_every_unknown_and_repeated_name_is_reported():
    watched, problems = triggering_sources(MULTI, sources=["orders", "nope", "orders", "events"])
    assert watched == []
    assert problems == [
        "@sensor_trigger(sources=...): no source named 'nope'; flowconfig.toml has: orders, events",
        "@sensor_trigger(sources=...): 'orders' is named twice; Metaflow's multi-event "
        "@trigger rejects duplicate event names",
    ]


def test_a_payload_key_clash_names_the_sources_key():
    from metaflow import FlowSpec, step

    class ClashFlow(FlowSpec):
        @step
        def start(self):
            self.orders_version = 1
            self.next(self.end)

        @step
        def end(self):
            pass

    (problem,) = payload_key_flow_problems(
        ClashFlow, "orders_version", ["start", "end"], "sources.orders.payload_key"
    )
    assert problem.startswith(
        "sources.orders.payload_key: 'orders_version' cannot be a Parameter of ClashFlow: "
        "step 'start' sets self.orders_version"
    )


# ------------------------------------------------------------------ the flow loads (subprocess)

DOWNSTREAM = """\
from metaflow import config_expr, project, step

from flowproject import BaseFlow, sensor_trigger


@project(name=config_expr("flowconfig.project_name"))
@sensor_trigger(%s)
class DownstreamFlow(BaseFlow):
    @step
    def start(self):
        self.events_version = "mine"
        self.next(self.end)

    @step
    def end(self):
        pass


if __name__ == "__main__":
    DownstreamFlow()
"""


def flow_env(tmp_path):
    return dict(
        os.environ,
        METAFLOW_USER="tester",
        METAFLOW_HOME=local_metaflow_home(tmp_path / "home"),
        METAFLOW_DATASTORE_SYSROOT_LOCAL=str(tmp_path),
        PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""),
    )


def run_downstream(tmp_path, arguments):
    (tmp_path / "downstreamflow.py").write_text(DOWNSTREAM % arguments)
    (tmp_path / "flowconfig.toml").write_text(two_source_config())
    return subprocess.run(
        [sys.executable, "downstreamflow.py", "--config", "flowconfig", "flowconfig.toml", "run"],
        cwd=str(tmp_path),
        env=flow_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.mark.parametrize(
    "arguments, expected",
    [
        (
            'sources=["orders", "order", "orders"]',
            [
                "@sensor_trigger(sources=...): no source named 'order'; flowconfig.toml has: "
                "orders, events",
                "@sensor_trigger(sources=...): 'orders' is named twice",
            ],
        ),
        (
            'sources=["orders", "events"]',
            [
                "sources.events.payload_key: 'events_version' cannot be a Parameter of "
                "DownstreamFlow: step 'start' sets self.events_version"
            ],
        ),
    ],
)
def test_a_wrong_trigger_stops_the_flow_loading(tmp_path, arguments, expected):
    proc = run_downstream(tmp_path, arguments)
    output = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert "Invalid flowconfig.toml" in output
    for line in expected:
        assert line in output
    assert "Task is starting" not in output


def test_the_two_source_flow_gets_one_trigger_with_both_events_each_mapping_its_key(tmp_path):
    """Metaflow's own @trigger processing (the dev loop's discover) of the README example."""
    root = tmp_path / "root"
    root.mkdir()
    shutil.copy(EXAMPLE, str(root / "two_source_flow.py"))
    config = tmp_path / "flowconfig.toml"
    config.write_text(two_source_config())
    loop = DevLoop(
        root=str(root),
        config=str(config),
        env=flow_env(tmp_path),
        log_dir=str(tmp_path / "l"),
        cwd=str(tmp_path),
    )
    description = loop.discover()["two_source_flow.py"]
    assert description["project"] == "testproject"
    assert description["branch"] == "user.tester"
    assert sorted(description["parameters"]) == [
        "events_change_id",
        "events_changes_url",
        "events_version",
        "orders_change_id",
        "orders_changes_url",
        "orders_version",
    ]

    def mapping(source):
        return {
            "%s_version" % source: "%s_version" % source,
            "%s_change_id" % source: "change_id",
            "%s_changes_url" % source: "changes_url",
        }

    assert description["rules"] == [
        {"event": EVENTS, "parameters": mapping("events"), "required": []},
        {"event": ORDERS, "parameters": mapping("orders"), "required": []},
    ]
    assert rules_summary(description["rules"]) == (
        "starts when each has arrived since its last start: %s (events_change_id <- "
        "change_id, events_changes_url <- changes_url, events_version <- events_version) AND "
        "%s (orders_change_id <- change_id, orders_changes_url <- changes_url, orders_version "
        "<- orders_version)" % (EVENTS, ORDERS)
    )


# ------------------------------------------------------------------ trigger_rules (fast)


def test_trigger_rules_refuse_a_sensor_whose_dependencies_are_not_all_required():
    sensor = {
        "kind": "Sensor",
        "spec": {
            "dependencies": [],
            "triggers": [{"template": {"name": "f", "conditions": "a || b", "k8s": {}}}],
        },
    }
    with pytest.raises(ValueError, match="conditions 'a || b'"):
        trigger_rules(sensor)


# ------------------------------------------------------------------ the dev loop (AND)


@pytest.fixture
def two_source_root(tmp_path):
    """A root with the two-source example; a work folder for runs."""
    root, work = tmp_path / "root", tmp_path / "work"
    root.mkdir()
    work.mkdir()
    shutil.copy(EXAMPLE, str(root / "two_source_flow.py"))
    (tmp_path / "flowconfig.toml").write_text(two_source_config())
    return tmp_path, flow_env(work)


def versions(argv):
    """The ``--<source>_version value`` options of a run's command line, in order."""
    found = []
    for option, value in zip(argv, argv[1:], strict=False):
        if option.startswith("--") and option.endswith("_version"):
            found += [option, value]
    return found


def event(name, key, value):
    return {"name": name, "payload": {key: value, "change_id": "c-" + value}}


def dev_loop(tmp_path, env, console_file):
    from rich.console import Console

    return DevLoop(
        root=str(tmp_path / "root"),
        config=str(tmp_path / "flowconfig.toml"),
        env=env,
        cwd=str(tmp_path / "work"),
        log_dir=str(tmp_path / "logs"),
        console=Console(file=console_file, width=400, highlight=False, soft_wrap=True),
    )


@pytest.mark.e2e
def test_a_flow_waiting_for_two_sources_starts_once_both_arrived_across_invocations(
    two_source_root,
):
    """Each invocation is a dev loop of its own (``open()``: Metaflow's @trigger processing of
    the example), and the events are handed to its ``deliver``, as its ``check`` does with
    what the sensor published: a sensor run delivering into a new dev loop each day is
    test_the_real_sensor_starts_a_two_source_flow_once_both_sources_announced."""
    tmp_path, env = two_source_root
    timeline = tmp_path / "timeline.txt"

    # Invocation 1: only orders changed. Nothing starts; the timeline says what is missing.
    with open(timeline, "w") as out, dev_loop(tmp_path, env, out) as loop:
        assert loop.deliver(event(ORDERS, "orders_version", "o1")) == 0
        loop.reap(wait=True)
    assert loop.runs == []
    first = timeline.read_text()
    assert "TwoSourceFlow starts when each of its 2 events has arrived since its last start" in (
        first
    )
    assert "TwoSourceFlow waits for events_updated (orders_updated received)" in first
    memory = tmp_path / "work/.metaflow/flowproject-dev/testproject/user.tester/TwoSourceFlow.json"
    assert list(json.loads(memory.read_text())["received"]) == [ORDERS]

    # Invocation 2 (a new dev loop, as on the next day): events changed. The flow starts
    # once, each Parameter from its own event.
    with open(timeline, "w") as out, dev_loop(tmp_path, env, out) as loop:
        assert loop.deliver(event(EVENTS, "events_version", "e1")) == 1
        loop.reap(wait=True)
        (run,) = loop.runs
        assert run.returncode == 0, open(run.log_path).read()
        assert versions(run.argv) == ["--events_version", "e1", "--orders_version", "o1"]
        # Forgotten once started: the next orders change alone starts nothing.
        assert loop.deliver(event(ORDERS, "orders_version", "o2")) == 0
        loop.reap(wait=True)
        assert len(loop.runs) == 1
    second = timeline.read_text()
    assert "TwoSourceFlow waits for events_updated (orders_updated received at " in second
    assert (
        "-> started TwoSourceFlow --events_change_id c-e1 --events_version e1 "
        "--orders_change_id c-o1 --orders_version o1"
    ) in second
    assert "%s succeeded" % run.pathspec in second
    log = open(run.log_path).read()
    assert "Training on orders = 'o1'" in log and "Training on events = 'e1'" in log
    assert list(json.loads(memory.read_text())["received"]) == [ORDERS]
    assert json.loads(memory.read_text())["received"][ORDERS]["payload"]["orders_version"] == "o2"


def test_a_single_event_flow_starts_on_each_event_and_remembers_nothing(tmp_path):
    loop = DevLoop(root=REPO, log_dir=str(tmp_path), cwd=str(tmp_path))
    description = {
        "flow": "StarterFlow",
        "project": "p",
        "branch": "user.tester",
        "parameters": {"data_version": {"required": False, "default": '""'}},
        "triggers": [{"name": "e", "parameters": {"data_version": "data_version"}}],
    }
    loop.flows = {"starterflow.py": dict(description, rules=trigger_rules(description))}
    started = []
    loop.start = lambda *args: started.append(args)
    for value in ("v1", "v2"):
        assert loop.deliver({"name": "e", "payload": {"data_version": value}}) == 1
    assert [args[3] for args in started] == [["--data_version", "v1"], ["--data_version", "v2"]]
    assert not os.path.exists(os.path.join(str(tmp_path), ".metaflow"))


@pytest.mark.e2e
def test_the_real_sensor_starts_a_two_source_flow_once_both_sources_announced(
    tmp_path, s3_server, s3_client, bucket
):
    """SensorFlow with two S3 sources; each check a new dev loop, as on two days."""
    from rich.console import Console

    root, work = tmp_path / "root", tmp_path / "work"
    root.mkdir()
    work.mkdir()
    shutil.copy(os.path.join(REPO, "sensorflow.py"), str(root / "sensorflow.py"))
    shutil.copy(EXAMPLE, str(root / "two_source_flow.py"))
    config = tmp_path / "flowconfig.toml"
    # events' first check takes its data as the baseline: check 1 announces orders only.
    config.write_text(two_source_config(bucket, events_extra='on_first_check = "accept"'))
    env = sensor_env(
        s3_server.endpoint_url,
        None,
        local_metaflow_home(tmp_path / "home"),
        user="tester",
        workdir=str(work),
    )
    s3_client.put_object(Bucket=bucket, Key="orders/part-0.parquet", Body=b"orders-0")
    s3_client.put_object(Bucket=bucket, Key="events/part-0.parquet", Body=b"events-0")
    timeline = tmp_path / "timeline.txt"

    def dev_loop(out):
        return DevLoop(
            root=str(root),
            config=str(config),
            env=env,
            cwd=str(work),
            log_dir=str(tmp_path / "logs"),
            console=Console(file=out, width=400, highlight=False, soft_wrap=True),
        )

    with open(timeline, "w") as out, dev_loop(out) as loop:
        succeeded, received = loop.check(1)
        loop.reap(wait=True)
        assert loop.runs == []
    assert succeeded, timeline.read_text()
    (orders,) = received
    assert (orders["name"], orders["payload"]["source"]) == (ORDERS, "orders")
    assert "TwoSourceFlow waits for events_updated (orders_updated received)" in (
        timeline.read_text()
    )

    s3_client.put_object(Bucket=bucket, Key="events/part-1.parquet", Body=b"events-1")
    with open(timeline, "w") as out, dev_loop(out) as loop:
        succeeded, received = loop.check(1)
        loop.reap(wait=True)
        runs = loop.runs
    assert succeeded, timeline.read_text()
    (events,) = received
    assert (events["name"], events["payload"]["source"]) == (EVENTS, "events")
    (run,) = runs
    orders_value = orders["payload"]["orders_version"]
    events_value = events["payload"]["events_version"]
    assert versions(run.argv) == [
        "--events_version",
        events_value,
        "--orders_version",
        orders_value,
    ]
    assert "--events_change_id" in run.argv and "--orders_changes_url" in run.argv
    assert run.returncode == 0, open(run.log_path).read()
    log = open(run.log_path).read()
    assert "Training on orders = %r" % orders_value in log
    assert "Training on events = %r" % events_value in log
    second = timeline.read_text()
    assert "%s succeeded" % run.pathspec in second
    # Each source's decision is on the timeline, not only the last one printed.
    assert "decided: orders: unchanged since the last announcement" in second
    assert "decided: events: changed from" in second


def two_event_loop(tmp_path):
    """A DevLoop knowing one two-event flow, whose start is recorded instead of run."""
    loop = DevLoop(root=REPO, log_dir=str(tmp_path / "logs"), cwd=str(tmp_path))
    description = {
        "flow": "TwoSourceFlow",
        "project": "testproject",
        "branch": "user.tester",
        "parameters": {
            "orders_version": {"required": False, "default": '""'},
            "events_version": {"required": False, "default": '""'},
        },
        "triggers": [
            {"name": ORDERS, "parameters": {"orders_version": "orders_version"}},
            {"name": EVENTS, "parameters": {"events_version": "events_version"}},
        ],
    }
    loop.flows = {"two_source_flow.py": dict(description, rules=trigger_rules(description))}
    started = []
    loop.start = lambda *args: started.append(args[3])
    return loop, started


def test_the_latest_event_of_each_source_counts_and_a_start_forgets_them(tmp_path):
    loop, started = two_event_loop(tmp_path)
    assert loop.deliver(event(ORDERS, "orders_version", "o1")) == 0
    assert loop.deliver(event(ORDERS, "orders_version", "o2")) == 0
    later, started_later = two_event_loop(tmp_path)  # another invocation, same folder
    assert later.deliver(event(EVENTS, "events_version", "e1")) == 1
    assert started_later == [["--events_version", "e1", "--orders_version", "o2"]]
    assert later.deliver(event(EVENTS, "events_version", "e2")) == 0
    assert started == []


def test_an_unreadable_memory_file_is_named(tmp_path):
    from flowproject.exceptions import DevLoopError

    loop, _ = two_event_loop(tmp_path)
    path = loop.memory_path(loop.flows["two_source_flow.py"])
    os.makedirs(os.path.dirname(path))
    with open(path, "w") as f:
        f.write("{not json")
    with pytest.raises(DevLoopError, match="cannot read %s" % re.escape(path)):
        loop.deliver(event(ORDERS, "orders_version", "o1"))


def test_two_dev_loops_in_one_folder_lose_no_event(tmp_path, monkeypatch):
    """Each loop receives one of the two events at the same moment: the flow starts once."""
    import threading
    import time

    first, started_first = two_event_loop(tmp_path)
    second, started_second = two_event_loop(tmp_path)
    read = DevLoop.received_since_start

    def slow_read(self, description):
        received = read(self, description)
        time.sleep(0.3)  # both would read "nothing yet" without the lock
        return received

    monkeypatch.setattr(DevLoop, "received_since_start", slow_read)
    threads = [
        threading.Thread(target=first.deliver, args=(event(ORDERS, "orders_version", "o1"),)),
        threading.Thread(target=second.deliver, args=(event(EVENTS, "events_version", "e1"),)),
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert started_first + started_second == [["--events_version", "e1", "--orders_version", "o1"]]
