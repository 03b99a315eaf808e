"""The Snowflake part of the demo: a table on a loopback fakesnow server, watched with the
``latest_timestamp`` template through a ``connections.toml`` entry."""

import datetime
import os

from flowproject.testing import FakesnowServer

from .common import DemoRunner, log

DATABASE, SCHEMA, TABLE = "ANALYTICS", "PUBLIC", "EVENTS"

CONFIG = """\
project_name = "demo_snowflake"

[data]
type = "snowflake"
template = "latest_timestamp"
connection_name = "fakesnow"

[data.params]
table = "%s.%s.%s"
column = "LOADED_AT"

[sensor]
cron_schedule = "*/5 * * * *"
event_name = "events_updated"
payload_key = "data_version"
""" % (DATABASE, SCHEMA, TABLE)


def _execute(server, *statements):
    connection = server.connect()
    try:
        cursor = connection.cursor()
        for sql, params in statements:
            cursor.execute(sql, params)
    finally:
        connection.close()


def _insert(row_id, loaded_at):
    return (
        "INSERT INTO %s.%s.%s VALUES (%%s, %%s)" % (DATABASE, SCHEMA, TABLE),
        (row_id, loaded_at),
    )


def run_snowflake_demo(workdir, env, webhook):
    """Seed a table, then check it three times: first check, no change, new rows.

    Parameters
    ----------
    workdir : str
        The demo's working folder (fakesnow's log, connections.toml, the flow's datastore).
    env : dict
        Environment of the flow runs (webhook, Metaflow home, PYTHONPATH).
    webhook : WebhookReceiver
        The started loopback webhook.

    Returns
    -------
    bool
        Whether the runs gave: an event, no event, an event with the new value.
    """
    log(
        "== Snowflake: MAX(LOADED_AT) of %s.%s.%s (template latest_timestamp)"
        % (DATABASE, SCHEMA, TABLE)
    )
    with FakesnowServer(log_path=os.path.join(workdir, "fakesnow.log")) as server:
        home = os.path.join(workdir, "snowflake-home")
        # fakesnow wants a current database and schema even for qualified names.
        server.write_connections_toml(home, database=DATABASE, schema=SCHEMA)
        env = {k: v for k, v in env.items() if not k.startswith("SNOWFLAKE_")}
        env["SNOWFLAKE_HOME"] = home
        _execute(
            server,
            ("CREATE DATABASE %s" % DATABASE, None),
            ("CREATE SCHEMA %s.%s" % (DATABASE, SCHEMA), None),
            (
                "CREATE TABLE %s.%s.%s (id INTEGER, loaded_at TIMESTAMP_NTZ)"
                % (DATABASE, SCHEMA, TABLE),
                None,
            ),
            _insert(1, datetime.datetime(2026, 11, 20, 8, 0)),
            _insert(2, datetime.datetime(2026, 11, 20, 9, 15)),
        )
        log(
            "  seeded %s.%s.%s with 2 rows on fakesnow at 127.0.0.1:%d"
            % (DATABASE, SCHEMA, TABLE, server.port)
        )
        log("  connection: connection_name = 'fakesnow' in %s/connections.toml" % home)
        first, second, third = DemoRunner(workdir, env, webhook).three_checks(
            "snowflake",
            CONFIG,
            lambda: _execute(server, _insert(3, datetime.datetime(2026, 11, 21, 7, 45))),
            "inserted a row with LOADED_AT = 2026-11-21 07:45:00",
        )
    return (
        len(first) == 1
        and not second
        and len(third) == 1
        and third[0]["payload"]["data_version"] == "2026-11-21T07:45:00"
    )
