"""Many sources in one flowconfig.toml: validation, per-source state, the bounded checks.

Fast: no flow run, no server (the end-to-end tests are in test_multi_source_e2e.py).
"""

import textwrap
import threading
import time

import pytest
from conftest import use_loopback_s3

from flowproject import FlowConfigError, parse_flowconfig
from flowproject.bounded import JobTimeout, run_bounded
from flowproject.config import configured_sources, source_named
from flowproject.sensor import Baseline, SensorState
from flowproject.sources import source_identity
from flowproject.state import StateStore, state_path

MULTI = """\
project_name = "proj"

[sensor]
cron_schedule = "*/30 * * * *"
settle_checks = 2

[sources.events]
type = "s3"
bucket = "s3://my-bucket"
key = "events/"
check_mode = "files_metadata"
event_name = "events_updated"
payload_key = "events_version"

[sources.orders]
type = "snowflake"
template = "row_count"
params = { table = "ANALYTICS.PUBLIC.ORDERS" }
event_name = "orders_updated"
payload_key = "orders_version"
settle_checks = 0
on_first_check = "accept"
"""


def problems_of(text):
    with pytest.raises(FlowConfigError) as info:
        parse_flowconfig(textwrap.dedent(text))
    return info.value.problems


def edit(old, new, text=MULTI):
    assert old in text
    return text.replace(old, new, 1)


# ------------------------------------------------------------------------------ the format


def test_each_source_gets_its_own_settings_and_the_global_defaults():
    events, orders = configured_sources(parse_flowconfig(MULTI))
    assert (events.name, orders.name) == ("events", "orders")  # file order
    assert events.data["bucket"] == "my-bucket" and "event_name" not in events.data
    assert (events.sensor["event_name"], events.sensor["payload_key"]) == (
        "events_updated",
        "events_version",
    )
    # settle_checks from [sensor] is every source's default; a source may set its own.
    assert (events.sensor["settle_checks"], orders.sensor["settle_checks"]) == (2, 0)
    assert (events.sensor["on_first_check"], orders.sensor["on_first_check"]) == (
        "publish",
        "accept",
    )
    # Global settings hold for every source.
    assert events.sensor["cron_schedule"] == orders.sensor["cron_schedule"] == "*/30 * * * *"
    assert events.sensor["check_concurrency"] == 8 and events.sensor["source_timeout"] == 900


def test_single_source_form_is_one_source_named_default():
    single = MULTI.split("[sources.events]")[0].replace(
        "settle_checks = 2",
        'event_name = "data_updated"\npayload_key = "data_version"\n'
        '[data]\ntype = "s3"\nbucket = "s3://b-1"\nkey = "k/"\ncheck_mode = "files_metadata"',
    )
    (only,) = configured_sources(parse_flowconfig(single))
    assert only.name == "default" and only.data["bucket"] == "b-1"
    assert only.sensor["event_name"] == "data_updated"


def test_unknown_source_name_lists_the_known_ones():
    with pytest.raises(FlowConfigError, match="no source named 'order'.*events, orders"):
        source_named(parse_flowconfig(MULTI), "order")


def test_every_problem_of_every_source_at_once_each_naming_its_key():
    text = edit('key = "events/"', 'key = "/events/"')
    text = edit("settle_checks = 0", "settle_checks = 1.0", text)
    text = edit('template = "row_count"', 'template = "row_count"\nwarehous = "X"', text)
    assert problems_of(text) == [
        "sources.events.key: expected a prefix relative to the bucket (no leading '/'), "
        "found '/events/'",
        "sources.orders.settle_checks: expected an integer, found float 1.0",
        "sources.orders.warehous: unknown key; did you mean 'warehouse'?",
    ]


def test_event_names_and_payload_keys_are_unique_across_sources():
    text = edit('event_name = "orders_updated"', 'event_name = "events_updated"')
    text = edit('payload_key = "orders_version"', 'payload_key = "events_version"', text)
    assert problems_of(text) == [
        "sources.orders.event_name: 'events_updated' is also the event_name of source "
        "'events'; each source needs its own",
        "sources.orders.payload_key: 'events_version' is also the payload_key of source "
        "'events'; each source needs its own",
    ]


def test_source_names_and_required_keys():
    text = edit("[sources.orders]", "[sources.Orders-2]")
    text = edit('payload_key = "events_version"\n', "", text)
    assert problems_of(text) == [
        "sources.Orders-2: a source name is a lowercase letter, then at most 63 lowercase "
        "letters, digits or '_', found 'Orders-2'",
        "sources.events.payload_key: missing; this key is required",
    ]


def test_default_is_not_a_source_name():
    assert problems_of(edit("[sources.orders]", "[sources.default]")) == [
        "sources.default: 'default' names the single [data] source; choose another name"
    ]


def test_payload_key_rules_hold_per_source():
    (problem,) = problems_of(edit('payload_key = "orders_version"', 'payload_key = "change_id"'))
    assert problem.startswith("sources.orders.payload_key: 'change_id' is set by the sensor")


def test_per_source_keys_stay_in_the_sources_and_one_form_per_file():
    text = edit("settle_checks = 2", 'settle_checks = 2\nevent_name = "x"')
    assert problems_of(text) == [
        "sensor.event_name: with [sources.<name>] tables each source sets its own event_name; "
        "move it into each [sources.<name>] table"
    ]
    both = MULTI + '\n[data]\ntype = "s3"\nbucket = "s3://b-1"\nkey = "k/"\n'
    assert problems_of(both)[0].startswith("data: a file has either one [data] table or")
    assert problems_of(MULTI.split("[sources.events]")[0] + "[sources]\n") == [
        "sources: expected at least one [sources.<name>] table, found none"
    ]


def test_global_bounds_are_validated():
    text = edit(
        "settle_checks = 2", "settle_checks = 2\ncheck_concurrency = 0\nsource_timeout = 2.5"
    )
    assert problems_of(text) == [
        "sensor.check_concurrency: expected a number >= 1, found 0",
        "sensor.source_timeout: expected an integer, found float 2.5",
    ]


def test_a_bad_type_is_named_with_its_source():
    (problem,) = problems_of(edit('type = "snowflake"', 'type = "bigquery"'))
    assert problem.startswith("sources.orders.type: expected one of 'delta', 'iceberg', 's3'")


# ------------------------------------------------------------------------------ state


@pytest.fixture
def storage(tmp_path):
    from metaflow.plugins.datastores.local_storage import LocalStorage

    return LocalStorage(str(tmp_path / ".metaflow"))


def test_named_sources_have_their_own_state_object_beside_the_default_one():
    assert state_path("F", "p", "user.a") == "F/sensor_state/p/user.a.json"
    assert state_path("F", "p", "user.a", "orders") == "F/sensor_state/p/user.a/orders.json"
    assert state_path("F", "p", "test.x/y", "orders") == "F/sensor_state/p/test.x_y/orders.json"


def announced_state(identity, value="v1"):
    return SensorState(
        baseline=Baseline(value, "fp-" + value, "cid", run="SensorFlow/1"),
        scope={"flow": "SensorFlow", "project": "p", "branch": "b", "source": "default"},
        identity=identity,
    )


def test_a_named_source_carries_over_the_default_baseline_only_for_the_same_identity(
    storage, capsys
):
    events = configured_sources(parse_flowconfig(MULTI))[0]
    identity = source_identity(events.data)
    legacy = StateStore(storage, "SensorFlow", "p", "b")
    legacy.save(announced_state(identity), None)

    same = StateStore(storage, "SensorFlow", "p", "b", source="events", identity=identity)
    state, version = same.load_versioned()
    assert (state.baseline.value, version) == ("v1", None)  # no object of its own yet
    assert state.scope["source"] == "events"
    assert "source 'events' carries over the baseline of SensorFlow/sensor_state/p/b.json" in (
        capsys.readouterr().err
    )
    # Once it has written its own object, that one is read.
    same.save(announced_state(identity, "v2"), None)
    assert same.load().baseline.value == "v2"

    other = dict(identity, key="features/")
    elsewhere = StateStore(storage, "SensorFlow", "p", "b", source="features", identity=other)
    assert elsewhere.load(quiet=True).baseline is None


# ------------------------------------------------------------------------------ bounded checks


def test_at_most_workers_jobs_run_at_once_and_a_failure_stops_no_other():
    lock, running, peak = threading.Lock(), [0], [0]

    def job(n):
        def run():
            with lock:
                running[0] += 1
                peak[0] = max(peak[0], running[0])
            time.sleep(0.05)
            with lock:
                running[0] -= 1
            if n == 3:
                raise ValueError("source 3 is broken")
            return n * 10

        return run

    outcomes = run_bounded({"s%d" % n: job(n) for n in range(8)}, workers=3, timeout=30)
    assert peak[0] == 3
    assert list(outcomes) == ["s%d" % n for n in range(8)]
    assert str(outcomes["s3"][1]) == "source 3 is broken" and outcomes["s3"][0] is None
    assert [outcomes["s%d" % n][0] for n in range(8) if n != 3] == [0, 10, 20, 40, 50, 60, 70]


def test_a_job_past_its_timeout_is_failed_and_left_behind():
    release = threading.Event()
    started = time.monotonic()
    outcomes = run_bounded(
        {"hung": lambda: release.wait(60), "quick": lambda: "ok"}, workers=2, timeout=0.5
    )
    release.set()
    assert time.monotonic() - started < 30  # generous: the hung job was not waited for
    assert outcomes["quick"] == ("ok", None)
    assert isinstance(outcomes["hung"][1], JobTimeout)
    assert str(outcomes["hung"][1]) == "did not finish within 0.5 seconds"


# ------------------------------------------------------------------------------ check_once


def two_prefixes(bucket):
    return textwrap.dedent(
        """\
        project_name = "proj"
        [sensor]
        cron_schedule = "@hourly"
        [sources.raw]
        type = "s3"
        bucket = "s3://%s"
        key = "raw/"
        check_mode = "files_metadata"
        event_name = "raw_updated"
        payload_key = "raw_version"
        [sources.clean]
        type = "s3"
        bucket = "s3://%s"
        key = "clean/"
        check_mode = "files_metadata"
        event_name = "clean_updated"
        payload_key = "clean_version"
        """
    ) % (bucket, bucket)


def test_check_once_walks_one_named_source(s3_server, s3_client, bucket, monkeypatch):
    use_loopback_s3(monkeypatch, s3_server.endpoint_url)
    from flowproject.testing import check_once

    s3_client.put_object(Bucket=bucket, Key="raw/a.csv", Body=b"a")
    s3_client.put_object(Bucket=bucket, Key="clean/a.csv", Body=b"a")
    config = parse_flowconfig(two_prefixes(bucket))
    with pytest.raises(FlowConfigError, match=r"names 2 sources \(raw, clean\); say which"):
        check_once(config)

    _, first, raw_state = check_once(config, source="raw")
    _, clean_first, _ = check_once(config, source="clean")
    assert first.publish and clean_first.publish
    assert first.change_id != clean_first.change_id  # the source is part of the change id
    assert raw_state.scope["source"] == "raw"
    s3_client.put_object(Bucket=bucket, Key="clean/b.csv", Body=b"b")
    _, again, _ = check_once(config, raw_state, source="raw")
    assert again.kind == "unchanged"


# The shipped flowconfig.toml's several-sources example: test_flowconfig_file.py.
