"""flowconfig.toml texts the tests write (each test builds its own config)."""

import textwrap


def s3_config(bucket, key, check_mode, project="testproject", extra_data="", extra_sensor=""):
    """A flowconfig.toml text for an S3 sensor."""
    return textwrap.dedent(
        """\
        project_name = "%s"
        [data]
        type = "s3"
        bucket = "s3://%s"
        key = "%s"
        check_mode = "%s"
        %s
        [sensor]
        cron_schedule = "*/5 * * * *"
        event_name = "data_updated"
        payload_key = "data_version"
        %s
        """
    ) % (project, bucket, key, check_mode, extra_data, extra_sensor)
