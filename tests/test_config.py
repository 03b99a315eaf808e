"""flowconfig.toml validation.

Each kind of bad input names the key, the expectation and the value.
"""

import os
import textwrap

import pytest
from conftest import REPO, s3_config

from flowproject import FlowConfigError, load_flowconfig, parse_flowconfig

VALID = """\
project_name = "proj"
[data]
type = "s3"
bucket = "s3://my-bucket"
key = "events/"
check_mode = "files_metadata"
[sensor]
cron_schedule = "*/30 * * * *"
event_name = "data_updated"
payload_key = "data_version"
"""


def problems_of(text):
    with pytest.raises(FlowConfigError) as info:
        parse_flowconfig(textwrap.dedent(text))
    return info.value.problems


def edit(old, new, text=VALID):
    assert old in text
    return text.replace(old, new)


def test_shipped_flowconfig_is_valid():
    config = load_flowconfig(os.path.join(REPO, "flowconfig.toml"))
    assert config["data"]["type"] == "s3"
    assert config["sensor"]["settle_checks"] == 0
    assert config["sensor"]["namespaced_events"] is True


def test_valid_config_is_normalized():
    config = parse_flowconfig(edit('key = "events/"', 'key = "events"'))
    # a folder prefix ends with "/" so that "events" does not also match "events_old/..."
    assert config["data"]["key"] == "events/"
    assert config["data"]["bucket"] == "my-bucket"


def test_unknown_data_type():
    assert problems_of(edit('type = "s3"', 'type = "gcs"')) == [
        "data.type: expected one of 's3', 'snowflake', found string 'gcs'"
    ]


def test_missing_bucket():
    assert problems_of(edit('bucket = "s3://my-bucket"\n', "")) == [
        "data.bucket: missing; this key is required"
    ]


def test_unknown_check_mode():
    (problem,) = problems_of(edit('"files_metadata"', '"file_sise"'))
    assert problem.startswith("data.check_mode: expected one of 'files_metadata', 'file_size'")
    assert problem.endswith("found string 'file_sise'")


@pytest.mark.parametrize(
    "cron, expected",
    [
        ("*/5 * * *", "found '*/5 * * *' with 4 field(s)"),
        ("0 10 * * ? *", "found '0 10 * * ? *' with 6 field(s)"),
        ("61 * * * *", "expected a valid 5-field cron expression, found '61 * * * *'"),
        ("every hour", "with 2 field(s)"),
    ],
)
def test_invalid_cron(cron, expected):
    (problem,) = problems_of(edit('"*/30 * * * *"', '"%s"' % cron))
    assert problem.startswith("sensor.cron_schedule: ")
    assert expected in problem


def test_wrong_types():
    text = edit('payload_key = "data_version"', 'payload_key = "data_version"\nsettle_checks = "3"')
    text = edit('key = "events/"', "key = 42", text)
    assert problems_of(text) == [
        "data.key: expected a string, found integer 42",
        "sensor.settle_checks: expected an integer, found string '3'",
    ]


def test_unknown_key_that_looks_like_a_typo():
    assert problems_of(edit("bucket =", "bukcet =")) == [
        "data.bucket: missing; this key is required",
        "data.bukcet: unknown key; did you mean 'bucket'?",
    ]
    assert problems_of(edit("cron_schedule", "cron_shedule")) == [
        "sensor.cron_schedule: missing; this key is required",
        "sensor.cron_shedule: unknown key; did you mean 'cron_schedule'?",
    ]


def test_unknown_key_unlike_any_lists_known_keys():
    (problem,) = problems_of(edit("[sensor]", "colour = 'blue'\n[sensor]"))
    assert problem.startswith("data.colour: unknown key; known keys: bucket, check_mode")


def test_every_problem_reported_at_once():
    text = edit('type = "s3"', 'type = "s3"\nbukcet = "x"')
    text = edit('"*/30 * * * *"', '"* * *"', text)
    text = edit('project_name = "proj"', 'project_name = "My Project"', text)
    problems = problems_of(text)
    assert len(problems) == 3
    assert any(p.startswith("project_name: expected lowercase letters") for p in problems)
    assert any(p.startswith("data.bukcet: unknown key") for p in problems)
    assert any(p.startswith("sensor.cron_schedule: ") for p in problems)


def test_bucket_must_be_an_s3_url():
    (problem,) = problems_of(edit('"s3://my-bucket"', '"my-bucket"'))
    assert problem == (
        "data.bucket: expected 's3://<bucket-name>' (3-63 lowercase letters, digits, '.', '-'), "
        "found 'my-bucket'"
    )


def test_single_object_modes_need_a_file_key():
    (problem,) = problems_of(edit('"files_metadata"', '"etag"'))
    assert problem.startswith("data.key: check_mode 'etag' watches one object")


def test_filters_only_for_files_metadata():
    text = edit(
        '"files_metadata"',
        '"file_size"',
        edit('key = "events/"', 'key = "a.csv"\ninclude = ["*.csv"]'),
    )
    assert problems_of(text) == [
        "data.include: only applies to check_mode 'files_metadata', found check_mode 'file_size'"
    ]


def test_role_must_be_an_arn():
    (problem,) = problems_of(edit("check_mode", 'role = "admin"\ncheck_mode'))
    assert problem.startswith("data.role: expected an IAM role ARN")


def test_payload_key_cannot_shadow_sensor_fields():
    (problem,) = problems_of(edit('payload_key = "data_version"', 'payload_key = "change_id"'))
    assert problem.startswith("sensor.payload_key: 'change_id' is set by the sensor itself")


def test_missing_sections_and_invalid_toml():
    assert problems_of('project_name = "p"\n') == [
        "data: missing; this key is required",
        "sensor: missing; this key is required",
    ]
    (problem,) = problems_of("project_name = \n")
    assert problem.startswith("(file): not valid TOML")


@pytest.mark.e2e
@pytest.mark.parametrize(
    "data_extra, expected",
    [
        ('check_mode = "file_sise"', "data.check_mode: expected one of"),
        (
            'check_mode = "files_metadata"\nbukcet = "x"',
            "data.bukcet: unknown key; did you mean 'bucket'?",
        ),
    ],
)
def test_bad_config_stops_the_flow_before_any_step(flow_runner, webhook, data_extra, expected):
    text = s3_config("some-bucket", "events/", "files_metadata").replace(
        'check_mode = "files_metadata"', data_extra
    )
    flow_runner.write_config(text)
    result = flow_runner.run()
    output = result.stdout + result.stderr
    assert result.returncode != 0
    assert "Invalid flowconfig.toml" in output
    assert expected in output
    assert "Task is starting" not in output  # no step ran, so S3 was never asked
    assert webhook.events == [] and webhook.rejected == 0


@pytest.mark.e2e
def test_cron_error_is_shown_intact(flow_runner, webhook):
    flow_runner.write_config(
        s3_config("some-bucket", "events/", "files_metadata").replace(
            '"*/5 * * * *"', '"0 10 * * ? *"'
        )
    )
    result = flow_runner.run()
    assert result.returncode != 0
    # Metaflow's console drops '*'; the message shows U+2217 so the expression stays readable.
    assert "found '0 10 \u2217 \u2217 ? \u2217' with 6 field(s)" in result.stderr
    assert webhook.events == []


def test_on_first_check_choices():
    assert parse_flowconfig(VALID)["sensor"]["on_first_check"] == "publish"
    text = edit(
        'payload_key = "data_version"', 'payload_key = "data_version"\non_first_check = "skip"'
    )
    assert problems_of(text) == [
        "sensor.on_first_check: expected one of 'publish', 'accept', found string 'skip'"
    ]
