"""The many-sources part of the demo: one sensor run watching two prefixes, and a downstream
flow that starts only once both have announced, through ``flowproject dev``'s loop."""

import os
import shutil

from flowproject.testing import MotoS3Server, sensor_env

from .common import REPO, dev_loop, log, read_artifact

BUCKET = "demo-ml-sources"

CONFIG = f"""\
project_name = "demo_sources"

[sensor]
cron_schedule = "*/5 * * * *"

[sources.orders]
type = "s3"
bucket = "s3://{BUCKET}"
key = "orders/"
check_mode = "files_metadata"
event_name = "orders_updated"
payload_key = "orders_version"

[sources.events]
type = "s3"
bucket = "s3://{BUCKET}"
key = "events/"
check_mode = "files_metadata"
event_name = "events_updated"
payload_key = "events_version"
"""


def run_sources_demo(workdir, env, webhook):
    """Two prefixes, one sensor: each check announces only the sources that changed, and
    ``TwoSourceFlow`` (examples/two_source_flow.py) starts when both announced since its last
    start, with each source's value as its Parameter."""
    log(
        "== Many sources: s3://%s/orders/ and events/ in one sensor, through flowproject dev"
        % BUCKET
    )
    # The dev loop starts every *flow.py of its root: a root with the sensor and this flow only.
    root = os.path.join(workdir, "sources-root")
    os.makedirs(root, exist_ok=True)
    shutil.copy(os.path.join(REPO, "sensorflow.py"), root)
    shutil.copy(os.path.join(REPO, "examples", "two_source_flow.py"), root)
    with MotoS3Server(log_path=os.path.join(workdir, "moto-sources.log")) as s3:
        env = sensor_env(s3_endpoint=s3.endpoint_url, base=env)
        client = s3.client()
        client.create_bucket(Bucket=BUCKET)
        client.put_object(Bucket=BUCKET, Key="orders/part-0.parquet", Body=b"orders day one")
        client.put_object(Bucket=BUCKET, Key="events/part-0.parquet", Body=b"events day one")
        log("  seeded orders/part-0.parquet and events/part-0.parquet on %s" % s3.endpoint_url)
        loop = dev_loop(workdir, env, "sources", CONFIG, root=root)
        with loop:
            log("  1. first check: both sources are new")
            ok1, first = loop.check(1)
            loop.reap(wait=True)
            client.put_object(Bucket=BUCKET, Key="events/part-1.parquet", Body=b"more events")
            log("  wrote events/part-1.parquet")
            log("  2. check: only events changed")
            ok2, second = loop.check(2)
            loop.reap(wait=True)
            client.put_object(Bucket=BUCKET, Key="orders/part-1.parquet", Body=b"more orders")
            log("  wrote orders/part-1.parquet")
            log("  3. check: now orders changed too")
            ok3, third = loop.check(3)
            loop.reap(wait=True)
    log("  Triggered TwoSourceFlow runs:")
    trained = []
    for run in loop.runs:
        if run.returncode != 0:
            log("    %s FAILED (log %s)" % (run.pathspec, run.log_path))
            continue
        value = read_artifact(workdir, run.pathspec, "start", "trained_on")
        trained.append(value)
        log(
            "    %s trained on orders = %s, events = %s"
            % (run.pathspec, value["orders"][:19], value["events"][:19])
        )
    announced = {}
    for event in first + second + third:
        payload = event["payload"]
        announced[payload["source"]] = payload[payload["source"] + "_version"]
    sources = [sorted(e["payload"]["source"] for e in batch) for batch in (first, second, third)]
    return (
        ok1
        and ok2
        and ok3
        and sources == [["events", "orders"], ["events"], ["orders"]]
        and len(trained) == 2
        and trained[-1] == announced
    )
