"""SensorFlow against a loopback fakesnow server: the events a webhook receives, exit codes,
messages. Each ``python sensorflow.py run`` costs seconds: 5 runs in this file.
"""

import datetime
import decimal
import gzip
import os
import textwrap

import pytest
from configs import local_metaflow_home
from conftest import REPO, FlowRunner
from conftest_snowflake import fakesnow_server, snowflake_home, warehouse  # noqa: F401

from flowproject.testing import sensor_env

pytestmark = pytest.mark.e2e

# Passwords that must never show up anywhere a user or a later reader can see.
TOML_PASSWORD = "toml-pw-5c1d0e77"
ENV_PASSWORD = "env-pw-8a2f94b3"


def snowflake_config(data_lines, params):
    return textwrap.dedent(
        """\
        project_name = "sfproject"
        [data]
        type = "snowflake"
        %s
        [data.params]
        %s
        [sensor]
        cron_schedule = "*/5 * * * *"
        event_name = "data_updated"
        payload_key = "data_version"
        """
    ) % ("\n".join(data_lines), "\n".join('%s = "%s"' % kv for kv in params.items()))


@pytest.fixture
def runner(tmp_path, webhook, snowflake_home):
    env = sensor_env(
        webhook_url=webhook.url,
        metaflow_home=local_metaflow_home(tmp_path / "metaflow-home"),
        user="tester",
        workdir=str(tmp_path),
    )
    env = {k: v for k, v in env.items() if not k.startswith("SNOWFLAKE_")}
    env["SNOWFLAKE_HOME"] = str(snowflake_home)
    env["PYTHONPATH"] = REPO + os.pathsep + env.get("PYTHONPATH", "")
    return FlowRunner(tmp_path, env)


def output(result):
    return result.stdout + result.stderr


def stored_bytes(folder):
    """Every file under ``folder`` (artifacts, logs, cards), gunzipped where gzipped."""
    for root, _, files in os.walk(folder):
        for name in files:
            with open(os.path.join(root, name), "rb") as f:
                data = f.read()
            if data[:2] == b"\x1f\x8b":
                try:
                    data = gzip.decompress(data)
                except OSError:
                    pass
            yield os.path.join(root, name), data


def test_sensor_announces_first_value_then_only_new_rows(
    runner, webhook, warehouse, fakesnow_server, snowflake_home
):
    # The connection's own password, and another in the environment: neither may leak.
    fakesnow_server.write_connections_toml(
        str(snowflake_home),
        password=TOML_PASSWORD,
        database=warehouse.database,
        schema=warehouse.schema,
    )
    runner.env["SNOWFLAKE_PASSWORD"] = ENV_PASSWORD
    warehouse.insert(
        (1, "a", decimal.Decimal("1.50"), datetime.datetime(2024, 1, 1, 10)),
        (2, "b", decimal.Decimal("2.25"), datetime.datetime(2024, 1, 2, 11)),
    )
    runner.write_config(
        snowflake_config(
            ['template = "latest_timestamp"', 'connection_name = "fakesnow"'],
            {"table": warehouse.table, "column": "LOADED_AT"},
        )
    )
    results = []

    first = runner.run()
    results.append(first)
    assert first.returncode == 0, output(first)
    assert "first check, no baseline yet: 2024-01-02T11:00:00" in output(first)
    assert [e["payload"]["data_version"] for e in webhook.events] == ["2024-01-02T11:00:00"]
    assert webhook.events[0]["name"] == "mfns.sfproject.user.tester.data_updated"

    # No unchanged check: the decision is test_sensor_logic.py's, and a Snowflake source quiet
    # through the flow is test_multi_source_e2e.py's second check (orders, on fakesnow).
    warehouse.insert((3, "c", decimal.Decimal("9.99"), datetime.datetime(2024, 1, 3, 9, 30)))
    changed = runner.run()
    results.append(changed)
    assert changed.returncode == 0, output(changed)
    assert len(webhook.events) == 2
    payload = webhook.events[1]["payload"]
    assert payload["data_version"] == "2024-01-03T09:30:00"
    assert payload["previous_value"] == "2024-01-02T11:00:00"

    # Secret hygiene: nothing printed, and nothing stored (artifacts, logs, cards).
    for result in results:
        for secret in (TOML_PASSWORD, ENV_PASSWORD):
            assert secret not in output(result)
    stored = list(stored_bytes(os.path.join(runner.workdir, ".metaflow")))
    assert any(b"latest_timestamp.sql" in data for _, data in stored)  # the checked artifact
    for path, data in stored:
        for secret in (TOML_PASSWORD, ENV_PASSWORD):
            assert secret.encode() not in data, path


def test_a_password_in_the_config_fails_clearly_and_publishes_nothing(runner, webhook):
    """A config error stops the flow loading, the secret never printed. The other config
    problems (a missing template, one outside sql/) are test_snowflake_source.py's, in-process;
    so is "no connection configured" (test_no_connection_configured), a source error failing
    the run as test_sql_error_fails_clearly_without_secrets's does through the flow."""
    runner.write_config(
        snowflake_config(
            [
                'template = "row_count"',
                'connection_name = "fakesnow"',
                'password = "%s"' % TOML_PASSWORD,
            ],
            {"table": "T"},
        )
    )
    result = runner.run()
    assert result.returncode != 0
    assert "data.password: secrets never go in flowconfig.toml" in output(result), output(result)
    assert TOML_PASSWORD not in output(result)
    assert webhook.events == []


def test_sql_error_fails_clearly_without_secrets(runner, webhook, warehouse, fakesnow_server):
    # The environment path, with a password in SNOWFLAKE_PASSWORD.
    runner.env.update(
        SNOWFLAKE_ACCOUNT="fakesnow",
        SNOWFLAKE_USER="fake",
        SNOWFLAKE_PASSWORD=ENV_PASSWORD,
        SNOWFLAKE_HOST="127.0.0.1",
        SNOWFLAKE_PORT=str(fakesnow_server.port),
        SNOWFLAKE_PROTOCOL="http",
        SNOWFLAKE_DATABASE=warehouse.database,
        SNOWFLAKE_SCHEMA=warehouse.schema,
    )
    runner.write_config(
        snowflake_config(['template = "row_count"'], {"table": warehouse.database + ".PUBLIC.NOPE"})
    )
    result = runner.run()
    assert result.returncode != 0
    assert "Snowflake query sql/row_count.sql failed:" in output(result), output(result)
    assert "NOPE does not exist" in output(result)
    assert ENV_PASSWORD not in output(result)
    assert webhook.events == []


def test_malformed_snowflake_variable_is_named_and_publishes_nothing(runner, webhook):
    # The environment path with a port that is not a number (today: a ValueError traceback).
    runner.env.update(
        SNOWFLAKE_ACCOUNT="fakesnow",
        SNOWFLAKE_USER="fake",
        SNOWFLAKE_PASSWORD=ENV_PASSWORD,
        SNOWFLAKE_HOST="127.0.0.1",
        SNOWFLAKE_PORT="80a",
        SNOWFLAKE_PROTOCOL="http",
    )
    runner.write_config(
        snowflake_config(['template = "row_count"'], {"table": "ANALYTICS.PUBLIC.EVENTS"})
    )
    result = runner.run()
    assert result.returncode != 0
    assert "SNOWFLAKE_PORT=80a: expected an integer port 1-65535" in output(result), output(result)
    assert "Traceback" not in output(result) and "ValueError" not in output(result)
    assert ENV_PASSWORD not in output(result)
    assert webhook.events == [] and webhook.rejected == 0
