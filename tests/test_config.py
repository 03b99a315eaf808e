"""flowconfig.toml validation.

Each kind of bad input names the key, the expectation and the value.
"""

import sys
import textwrap

import pytest
from conftest import s3_config

from flowproject import FlowConfigError, parse_flowconfig

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

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


# The repository's flowconfig.toml (shipped and in the working tree): test_flowconfig_file.py.


def test_valid_config_is_normalized():
    config = parse_flowconfig(edit('key = "events/"', 'key = "events"'))
    # a folder prefix ends with "/" so that "events" does not also match "events_old/..."
    assert config["data"]["key"] == "events/"
    assert config["data"]["bucket"] == "my-bucket"


def test_unknown_data_type():
    assert problems_of(edit('type = "s3"', 'type = "gcs"')) == [
        "data.type: expected one of 'delta', 'iceberg', 's3', 'snowflake', found string 'gcs'"
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
        ("0 10 * * ? *", "with 6 field(s); Metaflow hands Argo only the first five"),
        ("61 * * * *", "minute field '61' goes above the maximum 59 (in '61 * * * *')"),
        ("every hour", "with 2 field(s)"),
        ("", "found '' with 0 field(s)"),
        # Quartz / AWS syntax robfig/cron cannot parse
        ("0 0 L * *", "day-of-month field 'L' is not a number"),
        ("0 0 15W * *", "day-of-month field '15W' is not a number"),
        ("0 0 ? * 5#3", "day-of-week field '5#3' is neither a number nor a name (SUN-SAT)"),
        ("0 0 ? * 6L", "day-of-week field '6L' is neither a number nor a name"),
        ("0 0 * * 7", "day-of-week field '7' goes above the maximum 6 (Sunday is 0 or SUN)"),
        ("0 0 * * 1-7", "day-of-week field '1-7' goes above the maximum 6"),
        ("0 0 * 13 *", "month field '13' goes above the maximum 12"),
        ("0 0 0 * *", "day-of-month field '0' starts below the minimum 1"),
        ("0 24 * * *", "hour field '24' goes above the maximum 23"),
        ("0 0 * foo *", "month field 'foo' is neither a number nor a name (JAN-DEC)"),
        ("5-1 * * * *", "minute field '5-1' starts after it ends"),
        ("1-2-3 * * * *", "minute field '1-2-3' has more than one '-'"),
        ("*/5/2 * * * *", "minute field '*/5/2' has more than one '/'"),
        ("*/0 * * * *", "minute field '*/0' has a step of 0"),
        ("-5 * * * *", "minute field '-5': '' is not a number"),
        (", * * * *", "minute field ',' lists no value, so the schedule never runs"),
        # days that never come
        ("0 0 31 2 *", "'0 0 31 2 *' never runs: no day 31 in Feb"),
        ("0 0 30 2 *", "never runs: no day 30 in Feb"),
        ("0 0 30,31 feb ?", "never runs: no day 30 or 31 in Feb"),
        ("0 0 31 4,6,9,11 *", "never runs: no day 31 in Apr, Jun, Sep, Nov"),
        # descriptors
        ("@DAILY", "expected one of @yearly, @annually, @monthly, @weekly, @daily, @midnight"),
        ("@fortnightly", "or '@every <duration>', found '@fortnightly'"),
        ("@daily 0", "found '@daily 0'"),
        ("@every", "found '@every'"),
        ("@every 10", "expected a unit (ns, us, ms, s, m or h) after each number"),
        ("@every 1 h", "unknown unit ' h' in '1 h'"),
        ("@every 1h 30m", "unknown unit 'h ' in '1h 30m'"),
        ("@every 1d", "unknown unit 'd' in '1d'"),
        ("@every h", "expected a number before each unit"),
        ("TZ=UTC @daily", "a time zone prefix is not supported"),
    ],
)
def test_invalid_cron(cron, expected):
    (problem,) = problems_of(edit('"*/30 * * * *"', '"%s"' % cron))
    assert problem.startswith("sensor.cron_schedule: ")
    assert expected in problem


@pytest.mark.parametrize(
    "cron",
    [
        "*/30 * * * *",
        "0 10 * * ?",  # '?' reads as '*'
        "? ? ? ? ?",
        "0 0 1 jan-mar mon-FRI",
        "0 0 * JAN,jul SUN",
        "0 9-17/2 * * 1-5",
        "5/15 * * * *",  # 'N/STEP' is 'N-59/STEP'
        "*/1 * * * *",
        "00 +5 01 1 0",  # Go's Atoi takes leading zeros and '+'
        "1,,2 * * * *",  # empty list items are skipped
        "*-5 * * * *",  # robfig reads anything after '*-' as '*'
        "0 0 29 2 *",  # every leap year
        "0 0 31 2,3 *",  # in March
        "0 0 31 2 1",  # day-of-month OR day-of-week when neither is '*': Mondays in February
        "0 0 31 2 */2",  # a stepped '*' is not a bare '*'
        "  0   0  *  * *  ",
        "@yearly",
        "@annually",
        "@monthly",
        "@weekly",
        "@daily",
        "@midnight",
        "@hourly",
        "@every 1h",
        "@every 1h30m",
        "@every 90s",
        "@every 1.5h",
        "@every 500ms",
        "@every 0",
    ],
)
def test_valid_cron(cron):
    text = edit('"*/30 * * * *"', '"%s"' % cron)
    assert parse_flowconfig(text)["sensor"]["cron_schedule"] == cron


@pytest.mark.parametrize(
    "key, value",
    [
        ("sensor.history_size", "50.0"),
        ("sensor.settle_checks", "2.0"),
        ("sensor.settle_checks", "true"),
        ("data.list_concurrency", "8.0"),
    ],
)
def test_integer_keys_reject_floats_and_booleans(key, value):
    section, name = key.split(".")
    anchor = 'payload_key = "data_version"' if section == "sensor" else 'key = "events/"'
    text = edit(anchor, "%s\n%s = %s" % (anchor, name, value))
    found = "float %s" % value if "." in value else "boolean True"
    assert problems_of(text) == ["%s: expected an integer, found %s" % (key, found)]


SNOWFLAKE = """\
project_name = "proj"
[data]
type = "snowflake"
template = "row_count"
query_timeout = 600
[data.params]
table = "ANALYTICS.PUBLIC.EVENTS"
[sensor]
cron_schedule = "*/30 * * * *"
event_name = "data_updated"
payload_key = "data_version"
"""


def test_query_timeout_rejects_a_float():
    text = edit("query_timeout = 600", "query_timeout = 600.0", SNOWFLAKE)
    assert problems_of(text) == ["data.query_timeout: expected an integer, found float 600.0"]


@pytest.mark.parametrize(
    "value, found",
    [
        ("1979-05-27", "date 1979-05-27"),
        ("07:32:00", "time 07:32:00"),
        ("1979-05-27T07:32:00Z", "datetime 1979-05-27T07:32:00+00:00"),
        ("[1, 2]", "list [1, 2]"),
        ("{ name = 'x' }", "table {'name': 'x'}"),
    ],
)
def test_params_are_scalars(value, found):
    text = edit('table = "ANALYTICS.PUBLIC.EVENTS"', "table = %s" % value, SNOWFLAKE)
    assert problems_of(text) == [
        "data.params.table: expected a string, integer, float or boolean, found %s" % found
    ]


@pytest.mark.parametrize("value", ['"EVENTS"', "3", "2.5", "true"])
def test_params_accept_scalars(value):
    text = edit('table = "ANALYTICS.PUBLIC.EVENTS"', "table = %s" % value, SNOWFLAKE)
    assert (
        parse_flowconfig(text)["data"]["params"]["table"]
        == tomllib.loads(text)["data"]["params"]["table"]
    )


@pytest.mark.parametrize(
    "name, expected",
    [
        ("dataVersion", "expected a lowercase letter, then lowercase letters, digits or '_'"),
        ("_version", "expected a lowercase letter"),
        ("data-version", "expected a lowercase letter"),
        ("class", "'class' is a Python keyword"),
        ("tags", "'tags' is reserved by Metaflow (an option of every flow's command line)"),
        ("params", "'params' is reserved by Metaflow"),
        ("task_id", "'task_id' is reserved by Metaflow"),
        ("max_workers", "'max_workers' is reserved by Metaflow"),
        ("script", "'script' is reserved by Metaflow on Argo Workflows"),
        ("next", "'next' is a member of every Metaflow flow (FlowSpec.next)"),
        ("input", "'input' is a member of every Metaflow flow"),
        ("name", "'name' is set by the sensor itself"),
    ],
)
def test_payload_key_must_be_a_usable_parameter_name(name, expected):
    (problem,) = problems_of(edit('"data_version"', '"%s"' % name))
    assert problem.startswith("sensor.payload_key: ")
    assert expected in problem


def test_reserved_parameter_names_are_the_ones_metaflow_rejects():
    from metaflow import FlowSpec, Parameter
    from metaflow.exception import MetaflowException

    from flowproject.config import (
        FLOWSPEC_MEMBER_NAMES,
        METAFLOW_RESERVED_PARAMETER_NAMES,
    )

    for name in METAFLOW_RESERVED_PARAMETER_NAMES:
        with pytest.raises(MetaflowException, match="reserved"):
            Parameter(name, default="").init()
    Parameter("data_version", default="").init()
    assert FLOWSPEC_MEMBER_NAMES >= {n for n in dir(FlowSpec) if not n.startswith("_")}
    assert FLOWSPEC_MEMBER_NAMES >= FlowSpec._NON_PARAMETERS


@pytest.mark.parametrize(
    "bucket, expected",
    [
        ("s3://a..b", "'s3://a..b' is not a valid S3 bucket name: it has two adjacent periods"),
        ("s3://192.168.5.4", "it has the form of an IP address"),
        ("s3://xn--bucket", "it has the reserved prefix 'xn--'"),
        ("s3://sthree-bucket", "it has the reserved prefix 'sthree-'"),
        ("s3://bucket-s3alias", "it has the reserved suffix '-s3alias'"),
        ("s3://bucket--ol-s3", "it has the reserved suffix '--ol-s3'"),
        ("s3://My-Bucket", "expected 's3://<bucket-name>' (3-63 lowercase letters"),
        ("s3://ab", "expected 's3://<bucket-name>'"),
        ("s3://" + "a" * 64, "expected 's3://<bucket-name>'"),
        ("s3://-bucket", "expected 's3://<bucket-name>'"),
        ("s3://bucket_1", "expected 's3://<bucket-name>'"),
    ],
)
def test_bucket_follows_s3_naming_rules(bucket, expected):
    (problem,) = problems_of(edit('"s3://my-bucket"', '"%s"' % bucket))
    assert problem.startswith("data.bucket: ")
    assert expected in problem


@pytest.mark.parametrize("bucket", ["s3://abc", "s3://my.data.bucket", "s3://1.2.3.bucket"])
def test_valid_bucket_names(bucket):
    assert parse_flowconfig(edit('"s3://my-bucket"', '"%s"' % bucket))["data"]["bucket"]


def test_project_name_no_longer_than_metaflow_allows():
    from metaflow.plugins.project_decorator import VALID_NAME_LEN

    from flowproject.config import PROJECT_NAME_MAX_LENGTH

    assert PROJECT_NAME_MAX_LENGTH == VALID_NAME_LEN
    longest = "p" * VALID_NAME_LEN
    assert parse_flowconfig(edit('"proj"', '"%s"' % longest))["project_name"] == longest
    assert problems_of(edit('"proj"', '"%s"' % (longest + "p"))) == [
        "project_name: expected at most 128 characters, found 129"
    ]


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
