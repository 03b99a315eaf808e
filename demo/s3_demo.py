"""The S3 part of the demo: a bucket on a loopback moto server, watched with files_metadata."""

import os

from flowproject.testing import MotoS3Server, sensor_env

from .common import dev_loop, log, read_artifact

BUCKET = "demo-ml-data"

CONFIG = (
    """\
project_name = "demo_s3"

[data]
type = "s3"
bucket = "s3://%s"
key = "events/"
check_mode = "files_metadata"

[sensor]
cron_schedule = "*/5 * * * *"
event_name = "events_updated"
payload_key = "data_version"
"""
    % BUCKET
)


def run_s3_demo(workdir, env, webhook):
    """Seed a bucket, then check it three times through ``flowproject dev``'s loop.

    First check, no change, a new file: each event starts ``StarterFlow`` as Argo Events
    would, and the demo shows the value each triggered run trained on.
    """
    log("== S3: s3://%s/events/ (check_mode = files_metadata), through flowproject dev" % BUCKET)
    with MotoS3Server(log_path=os.path.join(workdir, "moto.log")) as s3:
        env = sensor_env(s3_endpoint=s3.endpoint_url, base=env)
        client = s3.client()
        client.create_bucket(Bucket=BUCKET)
        client.put_object(Bucket=BUCKET, Key="events/dt=2026-11-20/part-0.parquet", Body=b"day one")
        log(
            "  seeded s3://%s/events/dt=2026-11-20/part-0.parquet on %s" % (BUCKET, s3.endpoint_url)
        )
        loop = dev_loop(workdir, env, "s3", CONFIG)
        with loop:
            log("  1. first check (no baseline yet)")
            ok1, first = loop.check(1)
            loop.reap()
            log("  2. check again, nothing changed")
            ok2, second = loop.check(2)
            client.put_object(
                Bucket=BUCKET, Key="events/dt=2026-11-20/part-1.parquet", Body=b"more rows"
            )
            log("  wrote a new part file: events/dt=2026-11-20/part-1.parquet")
            log("  3. check after the change")
            ok3, third = loop.check(3)
            loop.reap(wait=True)
    trained = []
    log("  Triggered StarterFlow runs:")
    for run in loop.runs:
        if run.returncode != 0:
            log("    %s FAILED (log %s)" % (run.pathspec, run.log_path))
            continue
        value = read_artifact(workdir, run.pathspec, "start", "trained_on_value")
        trained.append(value)
        log("    %s trained on data_version = %s" % (run.pathspec, value))
    announced = [e["payload"]["data_version"] for e in first + third]
    ok = ok1 and ok2 and ok3 and len(first) == 1 and not second and len(third) == 1
    return ok and announced[0] != announced[1] and trained == announced
