"""The S3 part of the demo: a bucket on a loopback moto server, watched with files_metadata."""

import os

from flowproject.testing import MotoS3Server, sensor_env

from .common import DemoRunner, log

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
    """Seed a bucket, then check it three times: first check, no change, a new file."""
    log("== S3: s3://%s/events/ (check_mode = files_metadata)" % BUCKET)
    with MotoS3Server(log_path=os.path.join(workdir, "moto.log")) as s3:
        env = sensor_env(s3_endpoint=s3.endpoint_url, base=env)
        client = s3.client()
        client.create_bucket(Bucket=BUCKET)
        client.put_object(Bucket=BUCKET, Key="events/dt=2026-11-20/part-0.parquet", Body=b"day one")
        log(
            "  seeded s3://%s/events/dt=2026-11-20/part-0.parquet on %s" % (BUCKET, s3.endpoint_url)
        )
        first, second, third = DemoRunner(workdir, env, webhook).three_checks(
            "s3",
            CONFIG,
            lambda: client.put_object(
                Bucket=BUCKET, Key="events/dt=2026-11-20/part-1.parquet", Body=b"more rows"
            ),
            "wrote a new part file: events/dt=2026-11-20/part-1.parquet",
        )
    ok = len(first) == 1 and not second and len(third) == 1
    ok = ok and third[0]["payload"]["data_version"] != first[0]["payload"]["data_version"]
    return ok
