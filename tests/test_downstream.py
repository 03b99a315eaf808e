"""The downstream half (issue 21): each change processed once, and told exactly what changed.

End to end through the dev loop (``DevLoop``: the real SensorFlow on loopback S3, its events
delivered to the real StarterFlow as Argo Events would), plus the processed-once claim under
concurrency and the manifest reader, in flat memory.
"""

import json
import multiprocessing
import os
import subprocess
import sys
import textwrap
import time

import pytest
from claim_worker import claim_in_process, local_storage
from configs import local_metaflow_home
from conftest import REPO, accept_current_value, s3_config, starter_runs, use_loopback_s3
from test_iceberg_source import catalog  # noqa: F401  (a fixture)
from test_starterflow import starter_rejecting

from flowproject.changes import Changes, write_manifest
from flowproject.devloop import DevLoop
from flowproject.once import ProcessedOnce
from flowproject.state import state_object
from flowproject.testing import sensor_env


@pytest.fixture
def loop(flow_runner):
    flow_runner.env["METAFLOW_DATASTORE_SYSROOT_LOCAL"] = flow_runner.workdir
    dev = flow_runner.dev_loop()
    yield dev
    dev.close()


def check(loop, number):
    """One sensor check through the dev loop; its events; every triggered run finished."""
    succeeded, events = loop.check(number)
    assert succeeded, open(os.path.join(loop.log_dir, "check-%d.log" % number)).read()
    loop.reap(wait=True)
    return events


def log_of(run):
    with open(run.log_path) as f:
        return f.read()


def manifest(url):
    """``(header, [records])`` of a manifest file, read as a consumer without flowproject."""
    import gzip

    with gzip.open(url, "rt") as f:
        lines = [json.loads(line) for line in f]
    return lines[0], lines[1:]


@pytest.mark.e2e
def test_s3_manifests_reach_the_runs_and_duplicate_deliveries_never_proceed(
    flow_runner, loop, s3_client, bucket
):
    """Each check's manifest (first check; then added, modified, removed, one excluded) reaches
    the triggered run. The second check's event delivered twice at once starts two runs and
    exactly one proceeds; the same event delivered again afterwards is skipped, saying so."""
    s3_client.put_object(Bucket=bucket, Key="events/part-0.parquet", Body=b"rows-0")
    s3_client.put_object(Bucket=bucket, Key="events/part-1.parquet", Body=b"rows-1")
    flow_runner.write_config(
        s3_config(bucket, "events/", "files_metadata", extra_data='exclude = ["*.tmp"]')
    )
    loop.open()

    # First check: everything is new, and 2 objects are few enough to be listed.
    (event,) = check(loop, 1)
    header, records = manifest(event["payload"]["changes_url"])
    assert header["kind"] == "first_check" and header["complete"] is True
    assert [(r["kind"], r["key"]) for r in records] == [
        ("added", "events/part-0.parquet"),
        ("added", "events/part-1.parquet"),
    ]
    assert event["payload"]["changes_count"] == 2
    (first,) = loop.runs
    assert first.returncode == 0
    assert "Read 2 new or modified objects" in log_of(first)

    # One object added, one rewritten, one removed, one excluded by the filter.
    s3_client.put_object(Bucket=bucket, Key="events/part-2.parquet", Body=b"rows-2")
    s3_client.put_object(Bucket=bucket, Key="events/part-0.parquet", Body=b"rows-0, fixed")
    s3_client.delete_object(Bucket=bucket, Key="events/part-1.parquet")
    s3_client.put_object(Bucket=bucket, Key="events/scratch.tmp", Body=b"ignored")
    succeeded, (event,) = loop.check(2)  # delivers the event: StarterFlow starts
    assert succeeded, open(os.path.join(loop.log_dir, "check-2.log")).read()
    assert loop.deliver(event) == 1  # the same event again while that run is starting
    simultaneous = loop.runs[1:]
    assert len(simultaneous) == 2
    assert all(run.process.poll() is None for run in simultaneous)  # both running at once
    loop.reap(wait=True)
    payload = event["payload"]
    header, records = manifest(payload["changes_url"])
    assert header["kind"] == "changes" and header["complete"] is True
    assert (header["added"], header["modified"], header["removed"]) == (1, 1, 1)
    assert [(r["kind"], r["key"]) for r in records] == [
        ("modified", "events/part-0.parquet"),
        ("removed", "events/part-1.parquet"),
        ("added", "events/part-2.parquet"),
    ]
    rewritten = s3_client.head_object(Bucket=bucket, Key="events/part-0.parquet")
    assert records[0]["etag"] == rewritten["ETag"].strip('"')
    assert records[0]["size"] == len(b"rows-0, fixed")
    assert payload["changes_count"] == 3
    # Content-addressed, in the datastore beside the sensor's own objects.
    assert payload["changes_url"].startswith(
        os.path.join(flow_runner.workdir, ".metaflow", "SensorFlow", "sensor_changes", "")
    )
    # Two simultaneous deliveries: two runs, exactly one proceeds, and it reads the manifest.
    assert [run.returncode for run in simultaneous] == [0, 0]
    outs = [log_of(run) for run in simultaneous]
    proceeded = [out for out in outs if "Model trained on" in out]
    skipped = [out for out in outs if "Nothing trained" in out]
    assert len(proceeded) == 1 and len(skipped) == 1, outs
    assert "claimed by" in proceeded[0]
    assert "this run does nothing" in skipped[0]
    (second,) = [run for run in simultaneous if "Model trained on" in log_of(run)]
    assert second.returncode == 0
    assert "Read 2 new or modified objects" in log_of(second)

    # The same event delivered again: a run starts, says so and does nothing.
    assert loop.deliver(event) == 1
    loop.reap(wait=True)
    third = loop.runs[3]
    assert third.returncode == 0
    out = log_of(third)
    assert "change %s was already processed by %s" % (payload["change_id"], second.pathspec) in out
    assert "Nothing trained" in out and "Read " not in out

    runs = starter_runs(flow_runner)
    assert len(runs) == 4
    assert [(r["sensor_duplicate"], r["objects_read"]) for r in (runs[0], runs[3])] == [
        (False, 2),
        (True, None),
    ]
    # The simultaneous pair, read with the client: one proceeded, one was a duplicate.
    assert sorted((r["sensor_duplicate"], r["objects_read"]) for r in runs[1:3]) == [
        (False, 2),
        (True, None),
    ]
    assert runs[3]["change_id"] == payload["change_id"]


@pytest.mark.e2e
def test_a_run_started_by_hand_is_never_skipped(flow_runner):
    """Also StarterFlow's plain local run, the payload key its Parameter (the default
    ``data_version``; another name: test_starterflow.py)."""
    flow_runner.env["METAFLOW_DATASTORE_SYSROOT_LOCAL"] = flow_runner.workdir
    flow_runner.write_config(s3_config("some-bucket", "events/", "files_metadata"))
    for _ in range(2):
        proc = flow_runner.run("--data_version", "v1", flow="starterflow.py")
        assert proc.returncode == 0, proc.stderr
        assert "Training on data_version = 'v1'" in proc.stdout
        assert "Model trained on 'v1'" in proc.stdout
        assert "no change id (a run started by hand)" in proc.stdout


@pytest.mark.e2e
def test_once_false_processes_every_delivery(flow_runner, tmp_path):
    flow_runner.env["METAFLOW_DATASTORE_SYSROOT_LOCAL"] = flow_runner.workdir
    flow_runner.write_config(s3_config("some-bucket", "events/", "files_metadata"))
    with open(os.path.join(REPO, "starterflow.py")) as f:
        text = f.read().replace("@sensor_trigger  #", "@sensor_trigger(once=False)  #")
    flow = tmp_path / "againflow.py"
    flow.write_text(text)
    for _ in range(2):
        proc = subprocess.run(
            [sys.executable, str(flow), "--config", "flowconfig", flow_runner.config_path]
            + ["run", "--data_version", "v1", "--sensor_change_id", "c1"],
            cwd=flow_runner.workdir,
            env=flow_runner.env,
            capture_output=True,
            text=True,
        )
        assert proc.returncode == 0, proc.stderr
        assert "Model trained on 'v1'" in proc.stdout
    assert "sensor_processed" not in str(list(os.walk(flow_runner.workdir)))


@pytest.mark.parametrize(
    "payload_key, expected",
    [
        (
            "sensor_change_id",
            "sensor.payload_key: 'sensor_change_id' is the Parameter @sensor_trigger adds for "
            "the change_id of the source; choose another payload_key",
        ),
        (
            "sensor_changes_url",
            "sensor.payload_key: 'sensor_changes_url' is the Parameter @sensor_trigger adds "
            "for the changes_url of the source; choose another payload_key",
        ),
    ],
)
def test_a_payload_key_that_is_an_added_parameter_stops_the_flow_loading(
    flow_runner, payload_key, expected
):
    assert expected in starter_rejecting(flow_runner, payload_key)


def test_a_flow_artifact_named_like_an_added_parameter_stops_the_flow_loading(
    flow_runner, tmp_path
):
    flow_runner.write_config(s3_config("some-bucket", "events/", "files_metadata"))
    with open(os.path.join(REPO, "starterflow.py")) as f:
        text = f.read().replace("self.objects_read = 0", "self.sensor_changes_url = 0")
    flow = tmp_path / "clashflow.py"
    flow.write_text(text)
    proc = subprocess.run(
        [sys.executable, str(flow), "--config", "flowconfig", flow_runner.config_path, "run"],
        cwd=flow_runner.workdir,
        env=flow_runner.env,
        capture_output=True,
        text=True,
    )
    output = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert (
        "@sensor_trigger (changes_url of the source): 'sensor_changes_url' cannot be a "
        "Parameter of StarterFlow: step 'train' sets self.sensor_changes_url, and a Parameter "
        "cannot be assigned; rename it in the flow"
    ) in output


# ------------------------------------------------------------------ the claim, unit by unit


def test_of_eight_processes_claiming_one_change_at_once_exactly_one_proceeds(tmp_path):
    context = multiprocessing.get_context("spawn")
    barrier, answers = context.Barrier(8), context.Queue()
    workers = [
        context.Process(
            target=claim_in_process, args=(tmp_path, "TrainFlow/%d" % i, barrier, answers)
        )
        for i in range(8)
    ]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(60)
    results = [answers.get(timeout=5) for _ in workers]
    assert sorted(proceed for _run, proceed in results) == [False] * 7 + [True]


def test_a_claim_whose_run_died_is_taken_over_after_its_lease(tmp_path):
    from datetime import datetime, timedelta, timezone

    storage = local_storage(tmp_path)
    marker = ProcessedOnce(storage, "TrainFlow", "p", "user.t", {"default": "c1"})
    now = datetime.now(timezone.utc)
    assert marker.claim("TrainFlow/1", lease_seconds=60, now=now).proceed
    held = marker.claim("TrainFlow/2", lease_seconds=60, now=now + timedelta(seconds=30))
    assert not held.proceed
    assert "is being processed by TrainFlow/1" in held.reason
    taken = marker.claim("TrainFlow/3", lease_seconds=60, now=now + timedelta(seconds=61))
    assert taken.proceed
    assert "taking over the claim of TrainFlow/1" in taken.reason
    assert not marker.mark_done("TrainFlow/1")  # the dead run's end, if it ever came
    assert marker.mark_done("TrainFlow/3")
    done = marker.claim("TrainFlow/4", now=now + timedelta(days=30))
    assert not done.proceed and "already processed by TrainFlow/3" in done.reason


def test_deciding_among_many_processed_changes_reads_only_that_changes_objects(
    tmp_path, monkeypatch
):
    """A delivery reads its own change's marker (and the branch's last-processed record),
    never the markers of the other changes: as cheap after 300 changes as after one."""
    import flowproject.once as once

    storage = local_storage(tmp_path)
    reads = []

    def counted(storage, path):
        obj = state_object(storage, path)
        read = obj.read
        obj.read = lambda: reads.append(path) or read()
        return obj

    monkeypatch.setattr(once, "state_object", counted)

    def marker(i):
        return ProcessedOnce(
            storage, "TrainFlow", "p", "user.t", {"default": "c%04d" % i}, {"default": "m%d" % i}
        )

    for i in range(300):
        marker(i).claim("TrainFlow/%d" % i)
        marker(i).mark_done("TrainFlow/%d" % i)
    del reads[:]
    old, new = marker(150), marker(9999)  # an old announcement delivered again; a new one
    assert not old.claim("TrainFlow/2000").proceed
    assert new.claim("TrainFlow/2001").proceed
    last = once.last_path("TrainFlow", "p", "user.t")
    assert {old.path, new.path} <= set(reads) <= {old.path, new.path, last}, reads
    assert len(reads) <= 6, reads  # a few reads each, whatever the number processed


@pytest.mark.parametrize("with_manifests", [True, False])
def test_a_value_that_comes_back_is_processed_again_and_then_is_a_duplicate(
    tmp_path, with_manifests
):
    """A, B, A: the second A is new. With manifests (S3, tables) its changes_url differs from
    the first A's; without (Snowflake), B was processed last."""
    storage = local_storage(tmp_path)
    announced = {"A": 0}

    def marker(change_id):
        url = {"default": "%s-%d" % (change_id, announced.get(change_id, 0))}
        urls = url if with_manifests else {}
        return ProcessedOnce(storage, "TrainFlow", "p", "user.t", {"default": change_id}, urls)

    for run, change_id in (("TrainFlow/1", "A"), ("TrainFlow/2", "B")):
        assert marker(change_id).claim(run).proceed
        assert marker(change_id).mark_done(run)
    assert not marker("B").claim("TrainFlow/3").proceed  # B delivered again
    announced["A"] = 1  # the data came back to A: announced again (changes B -> A)
    back = marker("A").claim("TrainFlow/4")
    assert back.proceed, back.reason
    assert "another change was processed since" in back.reason
    assert not marker("A").claim("TrainFlow/5").proceed  # while TrainFlow/4 holds it
    assert marker("A").mark_done("TrainFlow/4")
    again = marker("A").claim("TrainFlow/6")
    assert not again.proceed and "already processed by TrainFlow/4" in again.reason


def test_several_sources_are_one_change_together(tmp_path):
    storage = local_storage(tmp_path)
    pair = {"orders": "o1", "events": "e1"}
    assert ProcessedOnce(storage, "F", None, "b", pair).claim("F/1").proceed
    assert not ProcessedOnce(storage, "F", None, "b", dict(pair)).claim("F/2").proceed
    assert ProcessedOnce(storage, "F", None, "b", dict(pair, events="e2")).claim("F/3").proceed


# ------------------------------------------------------------------ the manifest reader


def test_a_manifest_streams_100k_records_in_flat_memory(tmp_path):
    """The reader holds one line at a time: its peak memory does not grow with the manifest."""
    storage = local_storage(tmp_path)
    urls = {}
    for count in (1_000, 100_000):
        records = (
            {"kind": "added", "key": "p/obj-%06d" % i, "size": i, "etag": "e%d" % i}
            for i in range(count)
        )
        header = {"kind": "changes", "complete": True, "bucket": "b", "added": count}
        urls[count] = write_manifest(storage, "SensorFlow", header, records)
    script = textwrap.dedent(
        """\
        import resource, sys
        from flowproject.changes import Changes
        changes = Changes(sys.argv[1])
        n = sum(1 for change in changes if change.kind == "added")
        print(n, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024)
        """
    )
    peaks = {}
    for count, url in urls.items():
        proc = subprocess.run(
            [sys.executable, "-c", script, url],
            capture_output=True,
            text=True,
            env=dict(os.environ, PYTHONPATH=REPO),
        )
        assert proc.returncode == 0, proc.stderr
        n, peak_mb = map(int, proc.stdout.split())
        assert n == count
        peaks[count] = peak_mb
    assert peaks[100_000] <= peaks[1_000] + 5, peaks
    assert len(Changes(urls[100_000])) == 100_000


def test_a_run_without_a_manifest_is_told_nothing_is_listed():
    changes = Changes("")
    assert (changes.kind, changes.complete, list(changes)) == ("none", False, [])


# ------------------------------------------------------------------ 20,000 objects at once

PEAK_RSS_OF_READING = textwrap.dedent(
    """\
    import resource, sys
    from flowproject.changes import Changes
    changes = Changes(sys.argv[1])
    n = sum(1 for change in changes if change.kind != "removed")
    print(n, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024)
    """
)


def read_in_subprocess(url, env):
    """``(objects, peak RSS in MB)`` of a fresh process streaming the manifest at ``url``."""
    proc = subprocess.run(
        [sys.executable, "-c", PEAK_RSS_OF_READING, url], capture_output=True, text=True, env=env
    )
    assert proc.returncode == 0, proc.stderr
    objects, peak = map(int, proc.stdout.split())
    return objects, peak


@pytest.mark.e2e
def test_20k_added_objects_reach_the_triggered_run_through_the_dev_loop(tmp_path):
    """20,000 objects (20 listing pages over 16 sub-prefixes) through the whole loop. The
    100,000-object announcing run is the benchmark's (``python -m bench downstream``), and
    reading 100,000 records in flat memory is test_a_manifest_streams_100k_records_in_flat_memory:
    here a bigger count would only make moto serve more pages."""
    if REPO not in sys.path:
        sys.path.insert(0, REPO)
    from bench.run import SeededMoto

    go = str(tmp_path / "seed-20k")
    spec = [
        {"bucket": "big", "prefix": "events/day=1/", "count": 1},
        {"bucket": "big", "prefix": "events/day=2/", "count": 20_000, "partitions": 16},
    ]
    spec[1]["when"] = go
    work = tmp_path / "work"
    work.mkdir()
    (work / "flowconfig.toml").write_text(s3_config("big", "events/", "files_metadata"))
    with SeededMoto(spec) as server:
        env = sensor_env(
            server.endpoint_url, None, local_metaflow_home(tmp_path / "home"), workdir=str(work)
        )
        env["PYTHONPATH"] = REPO + os.pathsep + env.get("PYTHONPATH", "")
        env["METAFLOW_USER"] = "tester"
        with DevLoop(
            root=REPO,
            config=str(work / "flowconfig.toml"),
            env=env,
            cwd=str(work),
            log_dir=str(tmp_path / "logs"),
        ) as loop:
            (small,) = check(loop, 1)
            open(go, "w").close()
            deadline = time.monotonic() + 300
            while not os.path.exists(go + ".done"):
                assert time.monotonic() < deadline, "the 20,000 objects were never seeded"
                time.sleep(0.2)
            (big,) = check(loop, 2)
            first, second = loop.runs
    assert big["payload"]["changes_count"] == 20_000
    header, _ = manifest_header(big["payload"]["changes_url"])
    assert (header["kind"], header["complete"], header["added"]) == ("changes", True, 20_000)
    assert [run.returncode for run in loop.runs] == [0, 0]
    assert "Read 1 new or modified objects" in log_of(first)
    assert "Read 20000 new or modified objects" in log_of(second)
    # Streaming 20,000 records takes no more memory than streaming one.
    one, peak_one = read_in_subprocess(small["payload"]["changes_url"], env)
    many, peak_many = read_in_subprocess(big["payload"]["changes_url"], env)
    assert (one, many) == (1, 20_000)
    assert peak_many <= peak_one + 5, (peak_one, peak_many)


def manifest_header(url):
    """The header of a manifest and its size in bytes (only the first line is read)."""
    import gzip

    with gzip.open(url, "rt") as f:
        return json.loads(f.readline()), os.path.getsize(url)


# ------------------------------------------------------------------ a Delta table


@pytest.mark.e2e
def test_delta_range_and_its_data_files_reach_the_triggered_run(
    flow_runner, loop, s3_server, bucket
):
    pytest.importorskip("deltalake")
    from test_delta_source import Table, config_text

    table = Table(s3_server, "s3://%s/tables/events" % bucket)
    table.write([1, 2, 3])
    flow_runner.write_config(config_text(table.uri))
    loop.open()
    (first,) = check(loop, 1)
    header, records = manifest(first["payload"]["changes_url"])
    assert (header["kind"], header["complete"]) == ("first_check", False)
    assert (first["payload"]["from_version"], first["payload"]["to_version"]) == ("", "0")

    table.write([4])  # version 1
    table.open().optimize.compact()  # version 2: the same rows, rewritten
    table.write([5, 6])  # version 3
    (second,) = check(loop, 2)
    payload = second["payload"]
    assert (payload["from_version"], payload["to_version"]) == ("0", "3")
    header, records = manifest(payload["changes_url"])
    assert (header["kind"], header["complete"]) == ("changes", True)
    assert (header["from_version"], header["to_version"]) == (0, 3)
    # The files versions 1 and 3 added: the compaction's files hold no new rows.
    assert [(r["kind"], r["version"]) for r in records] == [("added", 1), ("added", 3)]
    assert payload["changes_count"] == 2
    # Reading just those files gives just the new rows.
    changes = Changes(payload["changes_url"])
    assert changes.versions == (0, 3)
    new_rows = sorted(
        value for change in changes for value in read_parquet(change.url, s3_server)["a"]
    )
    assert new_rows == [4, 5, 6]
    runs = loop.runs
    assert [run.returncode for run in runs] == [0, 0]
    assert "Read 2 new or modified objects" in log_of(runs[1])
    # The example table flow reads the same new rows, though the compaction took version 1's
    # file out of version 3: it reads that file from version 1 (stored until a VACUUM).
    out = run_example(flow_runner, *announced_args(second))
    assert "Read 3 new rows of version %s" % payload["data_version"] in out
    # Delivered again: skipped, nothing read. (Started by hand, without an announcement, it
    # reads the whole version: test_delta_e2e.py::test_example_flow_reads_exactly_the_
    # announced_version.)
    out = run_example(flow_runner, *announced_args(second))
    assert "was processed already: nothing read" in out


def read_parquet(url, s3_server):
    """The columns of one parquet object on the loopback S3, as lists."""
    import pyarrow.parquet as pq
    from pyarrow import fs

    host = s3_server.endpoint_url.split("://", 1)[1]
    filesystem = fs.S3FileSystem(
        endpoint_override=host,
        scheme="http",
        access_key="testing",
        secret_key="testing",
        region="us-east-1",
    )
    return pq.read_table(url[len("s3://") :], filesystem=filesystem).to_pydict()


def run_example(flow_runner, *args, env=None):
    """``examples/table_version_flow.py run ARGS`` with the test's config."""
    result = flow_runner.run(*args, flow="examples/table_version_flow.py", env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def announced_args(event):
    payload = event["payload"]
    return [
        "--data_version",
        payload["data_version"],
        "--sensor_change_id",
        payload["change_id"],
        "--sensor_changes_url",
        payload["changes_url"],
    ]


@pytest.mark.e2e
def test_the_table_example_reads_only_the_new_delta_rows_with_change_data_feed(
    flow_runner, webhook, s3_server, bucket, monkeypatch
):
    """With change data feed on, the rows of load_cdf. Without it, the rows of the data files
    the manifest lists, and a delivery of the same event again (skipped):
    test_delta_range_and_its_data_files_reach_the_triggered_run, over a range with a
    compaction in it; a run by hand: test_delta_e2e.py."""
    deltalake = pytest.importorskip("deltalake")
    import pyarrow as pa
    from test_delta_source import Table, config_text

    flow_runner.env["METAFLOW_DATASTORE_SYSROOT_LOCAL"] = flow_runner.workdir
    table = Table(s3_server, "s3://%s/tables/events" % bucket)
    deltalake.write_deltalake(
        table.uri,
        pa.table({"a": [1, 2, 3]}),
        storage_options=table.options,
        configuration={"delta.enableChangeDataFeed": "true"},
    )
    flow_runner.write_config(config_text(table.uri))
    # The baseline (version 0): taken as `flowproject reset --to-current` does, in-process,
    # instead of a first sensor run, whose event the test would not read.
    use_loopback_s3(monkeypatch, s3_server.endpoint_url)
    with open(flow_runner.config_path) as f:
        accept_current_value(flow_runner.workdir, f.read(), "user.tester")
    assert webhook.events == []
    table.write([4])
    table.write([5, 6])
    result = flow_runner.run()
    assert result.returncode == 0, result.stderr
    (event,) = webhook.events
    assert (event["payload"]["from_version"], event["payload"]["to_version"]) == ("0", "2")
    env = {"AWS_ENDPOINT_URL": s3_server.endpoint_url, "AWS_ALLOW_HTTP": "true"}
    out = run_example(flow_runner, *announced_args(event), env=env)
    assert "Read 3 new rows of version %s" % event["payload"]["data_version"] in out


@pytest.mark.e2e
def test_iceberg_snapshot_range_and_an_incremental_append_scan(catalog, flow_runner, loop):
    import pyarrow as pa
    from test_iceberg_source import config_text, new_table

    table = new_table(catalog)
    table.append(pa.table({"a": [1, 2]}))
    flow_runner.write_config(config_text(table="db.events", catalog="lake"))
    loop.open()
    (first,) = check(loop, 1)
    header, records = manifest(first["payload"]["changes_url"])
    assert (header["kind"], header["from_version"]) == ("first_check", None)
    snapshot_1 = catalog.load_table("db.events").current_snapshot().snapshot_id
    assert first["payload"]["to_version"] == str(snapshot_1)

    table = catalog.load_table("db.events")
    table.append(pa.table({"a": [3]}))
    table.append(pa.table({"a": [4, 5]}))
    (second,) = check(loop, 2)
    table = catalog.load_table("db.events")
    snapshot_3 = table.current_snapshot().snapshot_id
    payload = second["payload"]
    assert (payload["from_version"], payload["to_version"]) == (str(snapshot_1), str(snapshot_3))
    changes = Changes(payload["changes_url"])
    assert changes.versions == (snapshot_1, snapshot_3) and not changes.complete
    assert [run.returncode for run in loop.runs] == [0, 0]

    out = run_example(flow_runner, *announced_args(second))
    assert "Read 3 new rows of version %s" % snapshot_3 in out
    sys.path.insert(0, os.path.join(REPO, "examples"))
    from table_version_flow import read_new_iceberg_rows

    rows = read_new_iceberg_rows(table, *changes.versions)
    assert sorted(rows.to_pydict()["a"]) == [3, 4, 5]


# ------------------------------------------------------------------ on an S3 datastore


def test_on_an_s3_datastore_the_manifest_streams_from_s3_and_the_claim_holds(
    s3_server, s3_client, bucket, monkeypatch
):
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", s3_server.endpoint_url)
    for name, value in (
        ("AWS_ACCESS_KEY_ID", "testing"),
        ("AWS_SECRET_ACCESS_KEY", "testing"),
        ("AWS_DEFAULT_REGION", "us-east-1"),
    ):
        monkeypatch.setenv(name, value)
    from metaflow.plugins.datastores.s3_storage import S3Storage

    storage = S3Storage("s3://%s/metaflow" % bucket)
    records = [
        {"kind": "added", "key": "events/a.parquet", "size": 1, "etag": "e1"},
        {"kind": "removed", "key": "events/b.parquet", "size": 2, "etag": "e2"},
    ]
    header = {"kind": "changes", "complete": True, "bucket": "data", "added": 1, "removed": 1}
    url = write_manifest(storage, "SensorFlow", header, records)
    assert url.startswith("s3://%s/metaflow/SensorFlow/sensor_changes/" % bucket)
    assert write_manifest(storage, "SensorFlow", header, records) == url  # content-addressed
    changes = Changes(url)
    assert (changes.kind, changes.complete, len(changes)) == ("changes", True, 2)
    assert [(c.kind, c.url) for c in changes] == [
        ("added", "s3://data/events/a.parquet"),
        ("removed", "s3://data/events/b.parquet"),
    ]

    first = ProcessedOnce(storage, "TrainFlow", "p", "prod", {"default": "c1"})
    assert first.claim("TrainFlow/1").proceed
    again = ProcessedOnce(storage, "TrainFlow", "p", "prod", {"default": "c1"}).claim("TrainFlow/2")
    assert not again.proceed and "is being processed by TrainFlow/1" in again.reason
    assert first.mark_done("TrainFlow/1")
    key = "metaflow/TrainFlow/sensor_processed/p/prod/c1.json"
    assert json.loads(s3_client.get_object(Bucket=bucket, Key=key)["Body"].read())["status"] == (
        "done"
    )


def test_sensor_changes_names_the_sources_the_flow_waits_for():
    from flowproject.changes import UnknownSource, sensor_changes

    class Flow(object):
        _sensor_changes_params = {"orders": "orders_changes_url", "events": "events_changes_url"}
        orders_changes_url = ""

    with pytest.raises(UnknownSource, match="the flow waits for orders, events; name one"):
        sensor_changes(Flow())
    with pytest.raises(UnknownSource, match=r"source='other'\): the flow waits for 'orders'"):
        sensor_changes(Flow(), source="other")
    assert sensor_changes(Flow(), source="orders").kind == "none"
