"""The Delta Lake part of the demo: a table written by ``deltalake`` to a loopback moto server,
watched through its transaction log."""

import os

from flowproject.testing import MotoS3Server, sensor_env

from .common import DemoRunner, log

BUCKET = "demo-lake"
URI = "s3://%s/tables/events" % BUCKET

CONFIG = (
    """\
project_name = "demo_delta"

[data]
type = "delta"
uri = "%s"

[sensor]
cron_schedule = "*/5 * * * *"
event_name = "events_updated"
payload_key = "data_version"
"""
    % URI
)


def run_delta_demo(workdir, env, webhook):
    """Write a table, then check it: first check, after an OPTIMIZE, after an append.

    Returns
    -------
    bool
        Whether the runs gave: an event for version 1, no event, an event for version 3.
    """
    import pyarrow as pa
    from deltalake import DeltaTable, write_deltalake

    log("== Delta Lake: %s (type = delta), read from _delta_log/" % URI)
    with MotoS3Server(log_path=os.path.join(workdir, "moto-delta.log")) as s3:
        env = sensor_env(s3_endpoint=s3.endpoint_url, base=env)
        s3.client().create_bucket(Bucket=BUCKET)
        options = {
            "AWS_ENDPOINT_URL": s3.endpoint_url,
            "AWS_ALLOW_HTTP": "true",
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_REGION": "us-east-1",
            "AWS_S3_ALLOW_UNSAFE_RENAME": "true",
        }

        def write(values):
            write_deltalake(URI, pa.table({"a": values}), mode="append", storage_options=options)

        write([1, 2])
        write([3])
        log("  wrote versions 0 and 1 with the deltalake library on %s" % s3.endpoint_url)
        config_path = os.path.join(workdir, "flowconfig-delta.toml")
        with open(config_path, "w") as f:
            f.write(CONFIG)
        runner = DemoRunner(workdir, env, webhook)
        first = runner.run("1. first check (no baseline yet)", config_path)
        DeltaTable(URI, storage_options=options).optimize.compact()
        log("  OPTIMIZE: version 2 rewrites the files, changes no data")
        second = runner.run("2. check after the compaction", config_path)
        write([4])
        log("  appended a row: version 3")
        third = runner.run("3. check after the append", config_path)
    return (
        len(first) == 1
        and first[0]["payload"]["table_version"] == "1"
        and not second
        and len(third) == 1
        and third[0]["payload"]["table_version"] == "3"
    )
