"""The Snowflake source in-process: templates, config, connection paths, results, secrets.

Queries run against a loopback fakesnow server through the real connector.
"""

import datetime
import decimal
import sys
import textwrap

import pytest
from conftest_snowflake import fakesnow_server, snowflake_home, warehouse  # noqa: F401

from flowproject import FlowConfigError, SourceError, parse_flowconfig
from flowproject.decorators import CONNECTOR_PACKAGE, connector_package_spec
from flowproject.sources import snowflake as sf


def config_text(data_lines, params=None):
    params_block = ""
    if params is not None:
        params_block = "[data.params]\n" + "\n".join('%s = "%s"' % kv for kv in params.items())
    return textwrap.dedent(
        """\
        project_name = "testproject"
        [data]
        type = "snowflake"
        %s
        %s
        [sensor]
        cron_schedule = "*/5 * * * *"
        event_name = "data_updated"
        payload_key = "data_version"
        """
    ) % ("\n".join(data_lines), params_block)


def problems_of(text):
    with pytest.raises(FlowConfigError) as e:
        parse_flowconfig(text)
    return e.value.problems


def data_for(sql, params=None, template="inline"):
    """A normalized [data] table running ``sql`` (as normalize() would embed it)."""
    return {
        "type": "snowflake",
        "template": template,
        "query_text": sql,
        "params": params or {},
        "query_timeout": 60,
        "connection_name": "fakesnow",
    }


def run_check(data):
    with sf.open_session(data) as session:
        observation = sf.check(data, session)
    return observation, session


# ------------------------------------------------------------------ templates and config


def test_shipped_templates_are_listed():
    assert {"latest_timestamp", "row_count", "table_metadata", "table_fingerprint"} <= set(
        sf.available_templates()
    )


def test_config_embeds_template_text_and_params():
    config = parse_flowconfig(
        config_text(
            ['template = "row_count.sql"', 'connection_name = "x"'],
            {"table": "ANALYTICS.PUBLIC.EVENTS"},
        )
    )
    data = config["data"]
    assert data["template"] == "row_count"
    assert data["query_text"] == (sf.sql_dir() / "row_count.sql").read_text()
    assert "%(table)s" in data["query_text"]
    assert data["params"] == {"table": "ANALYTICS.PUBLIC.EVENTS"}


@pytest.mark.parametrize("name", ["../flowconfig.toml", "/etc/passwd", "sub/row_count", "..sql"])
def test_template_outside_sql_is_rejected(name):
    problems = problems_of(config_text(['template = "%s"' % name]))
    assert problems == [
        "data.template: expected the name of a file in sql/ (no folders, no '..'), found %r" % name
    ]


def test_missing_template_lists_available_ones():
    (problem,) = problems_of(config_text(['template = "latest_ts"']))
    assert problem.startswith("data.template: no template 'latest_ts' in ")
    assert "available: latest_timestamp, row_count, table_fingerprint, table_metadata" in problem


@pytest.mark.parametrize(
    "line, key",
    [
        ('password = "hunter2-secret"', "data.password"),
        ('private_key_file = "/keys/rsa.p8"', "data.private_key_file"),
        ('token = "hunter2-secret"', "data.token"),
    ],
)
def test_secret_in_flowconfig_is_an_error_naming_the_key(line, key):
    problems = problems_of(config_text(['template = "row_count"', line], {"table": "T"}))
    assert len(problems) == 1
    assert problems[0].startswith(key + ": secrets never go in flowconfig.toml")
    assert "hunter2" not in problems[0]


def test_params_must_match_the_template_placeholders():
    problems = problems_of(
        config_text(['template = "latest_timestamp"'], {"table": "T", "colum": "LOADED_AT"})
    )
    assert problems == [
        "data.params.colum: template 'latest_timestamp' has no %(colum)s placeholder "
        "(it uses: column, table)",
        "data.params.column: missing; template 'latest_timestamp' binds %(column)s",
    ]


def test_unknown_key_is_reported():
    problems = problems_of(
        config_text(['template = "row_count"', 'warehous = "WH"'], {"table": "T"})
    )
    assert problems == ["data.warehous: unknown key; did you mean 'warehouse'?"]


# ------------------------------------------------------------------ results


def test_one_cell_becomes_its_value():
    ts = datetime.datetime(2024, 5, 1, 12, 30, 0)
    assert sf.normalize_result([(ts,)]) == "2024-05-01T12:30:00"
    tz = datetime.datetime(2024, 5, 1, 12, 30, tzinfo=datetime.timezone.utc)
    assert sf.normalize_result([(tz,)]) == "2024-05-01T12:30:00+00:00"
    assert sf.normalize_result([(decimal.Decimal("1.50"),)]) == "1.50"
    assert sf.normalize_result([(decimal.Decimal("1E+3"),)]) == "1000"
    assert sf.normalize_result([(42,)]) == "42"


def test_empty_result_or_null_is_absent():
    assert sf.normalize_result([]) is None
    assert sf.normalize_result([(None,)]) is None
    assert sf.normalize_result([(None, None)]) is None


def test_rows_do_not_depend_on_order():
    a = [(1, decimal.Decimal("2.50")), (2, None)]
    value = sf.normalize_result(a)
    assert value == '[["1","2.50"],["2",null]]'
    assert sf.normalize_result(list(reversed(a))) == value
    assert sf.normalize_result([(1, decimal.Decimal("2.51")), (2, None)]) != value


def test_large_result_is_a_digest():
    rows = [(i, "x" * 20) for i in range(200)]
    value = sf.normalize_result(rows)
    assert value.startswith("sha256:") and len(value) == len("sha256:") + 64
    assert sf.normalize_result(list(reversed(rows))) == value


# ------------------------------------------------------------------ against fakesnow


def test_check_with_connection_name(snowflake_home, warehouse):
    warehouse.insert((1, "a", decimal.Decimal("1.50"), datetime.datetime(2024, 1, 1, 10)))
    warehouse.insert((2, "b", decimal.Decimal("2.25"), datetime.datetime(2024, 1, 2, 11)))
    sql = (sf.sql_dir() / "latest_timestamp.sql").read_text()
    data = data_for(sql, {"table": warehouse.table, "column": "LOADED_AT"}, "latest_timestamp")
    observation, session = run_check(data)
    assert observation.value == "2024-01-02T11:00:00"
    assert observation.summary["rows"] == 1
    # One connect and one query per check, with the SQL text and a duration.
    assert [r["request"] for r in session.requests] == ["connect", "query"]
    assert session.requests[0]["via"] == "connection_name"
    assert session.requests[1]["sql"] == sql and session.requests[1]["seconds"] >= 0
    assert session._connection is None  # closed when the session ended


def test_empty_table_is_absent(snowflake_home, warehouse):
    # MAX of an empty table is NULL. (fakesnow returns a NULL TIMESTAMP_NTZ as 1970-01-01,
    # so a VARCHAR column shows it here; real Snowflake returns NULL for both.)
    null = run_check(data_for("SELECT MAX(name) FROM %s" % warehouse.table))[0]
    assert null.value is None and null.absent and null.summary["rows"] == 1
    empty = run_check(data_for("SELECT id FROM %s" % warehouse.table))[0]
    assert empty.value is None and empty.summary["rows"] == 0


def test_row_count_and_metadata_templates(snowflake_home, warehouse):
    row = (1, "a", decimal.Decimal("1.00"), datetime.datetime(2024, 1, 1))
    warehouse.insert(row, row, row)
    count = data_for(
        (sf.sql_dir() / "row_count.sql").read_text(), {"table": warehouse.table}, "row_count"
    )
    assert run_check(count)[0].value == "3"
    meta = data_for(
        (sf.sql_dir() / "table_metadata.sql").read_text(),
        {"schema": "PUBLIC", "table": "EVENTS"},
        "table_metadata",
    )
    # fakesnow's LAST_ALTERED is a constant; ROW_COUNT is real.
    assert run_check(meta)[0].value == '[["1970-01-01T00:00:00+00:00","3"]]'


def test_params_are_bound_not_formatted(snowflake_home, warehouse):
    warehouse.insert((1, "o'brien", decimal.Decimal("1"), datetime.datetime(2024, 1, 1)))
    warehouse.insert((2, "smith", decimal.Decimal("1"), datetime.datetime(2024, 1, 1)))
    sql = "SELECT COUNT(*) FROM %s WHERE name = %%(name)s" % warehouse.table
    assert run_check(data_for(sql, {"name": "o'brien"}))[0].value == "1"
    assert run_check(data_for(sql, {"name": "x' OR '1'='1"}))[0].value == "0"


def test_sql_error_is_a_source_error(snowflake_home, warehouse):
    data = data_for("SELECT COUNT(*) FROM %s.PUBLIC.NOPE" % warehouse.database, template="t")
    with pytest.raises(SourceError) as e:
        run_check(data)
    assert "Snowflake query sql/t.sql failed:" in str(e.value)
    assert "NOPE does not exist" in str(e.value)


def test_env_variables_path(snowflake_home, warehouse, fakesnow_server, monkeypatch):
    warehouse.insert((1, "a", decimal.Decimal("1"), datetime.datetime(2024, 1, 1)))
    for name, value in {
        "SNOWFLAKE_ACCOUNT": "fakesnow",
        "SNOWFLAKE_USER": "fake",
        "SNOWFLAKE_PASSWORD": "env-password-123",
        "SNOWFLAKE_HOST": "127.0.0.1",
        "SNOWFLAKE_PORT": str(fakesnow_server.port),
        "SNOWFLAKE_PROTOCOL": "http",
        "SNOWFLAKE_DATABASE": warehouse.database,
        "SNOWFLAKE_SCHEMA": "PUBLIC",
    }.items():
        monkeypatch.setenv(name, value)
    data = data_for("SELECT COUNT(*) FROM EVENTS")
    del data["connection_name"]
    observation, session = run_check(data)
    assert observation.value == "1"
    assert session.requests[0]["via"] == "env"
    assert "env-password-123" not in repr(session.requests)
    assert (
        sf.describe(data)
        == "snowflake sql/inline.sql via SNOWFLAKE_* environment (account 'fakesnow')"
    )


def test_connection_name_wins_over_env(snowflake_home, warehouse, monkeypatch):
    monkeypatch.setenv("SNOWFLAKE_ACCOUNT", "other")
    monkeypatch.setenv("SNOWFLAKE_USER", "other")
    how, kwargs, _ = sf.connection_plan(data_for("SELECT 1"))
    assert how == "connection_name" and kwargs["connection_name"] == "fakesnow"


def test_unknown_connection_name_lists_entries(snowflake_home):
    data = dict(data_for("SELECT 1"), connection_name="prod")
    with pytest.raises(SourceError) as e:
        run_check(data)
    assert "data.connection_name = 'prod': no such entry in " in str(e.value)
    assert str(e.value).endswith("entries: fakesnow")


def test_no_connection_configured(snowflake_home):
    data = data_for("SELECT 1")
    del data["connection_name"]
    with pytest.raises(SourceError) as e:
        run_check(data)
    assert str(e.value).startswith("No Snowflake connection configured: set [data] integration")


# ------------------------------------------------------------------ SNOWFLAKE_* values

# A working environment path; each case below spoils one variable of it.
GOOD_ENV = {
    "SNOWFLAKE_ACCOUNT": "myorg-myaccount",
    "SNOWFLAKE_USER": "sensor@example.com",
    "SNOWFLAKE_PASSWORD": "pw-9d1c3b",
}


def env_plan(**env):
    data = data_for("SELECT 1")
    del data["connection_name"]
    return sf.connection_plan(data, dict(GOOD_ENV, **env))


def test_malformed_port_is_a_message_naming_the_variable(snowflake_home, monkeypatch):
    # Through the source's own check: today a ValueError from int('80a').
    for name, value in dict(GOOD_ENV, SNOWFLAKE_PORT="80a").items():
        monkeypatch.setenv(name, value)
    data = data_for("SELECT 1")
    del data["connection_name"]
    with pytest.raises(SourceError) as e:
        run_check(data)
    assert str(e.value) == (
        "Invalid Snowflake environment variable:\n"
        "SNOWFLAKE_PORT=80a: expected an integer port 1-65535"
    )


@pytest.mark.parametrize(
    "name, value, expected",
    [
        ("SNOWFLAKE_PORT", "0", "SNOWFLAKE_PORT=0: expected an integer port 1-65535"),
        ("SNOWFLAKE_PORT", "65536", "SNOWFLAKE_PORT=65536: expected an integer port 1-65535"),
        ("SNOWFLAKE_PORT", "443 ", "SNOWFLAKE_PORT='443 ': expected an integer port 1-65535"),
        ("SNOWFLAKE_PORT", "-1", "SNOWFLAKE_PORT=-1: expected an integer port 1-65535"),
        ("SNOWFLAKE_PROTOCOL", "ftp", "SNOWFLAKE_PROTOCOL=ftp: expected 'https' or 'http'"),
        (
            "SNOWFLAKE_HOST",
            "https://xy.snowflakecomputing.com/",
            "SNOWFLAKE_HOST=https://xy.snowflakecomputing.com/: expected a host name like",
        ),
        ("SNOWFLAKE_HOST", "db:443", "SNOWFLAKE_HOST=db:443: expected a host name like"),
        (
            "SNOWFLAKE_ACCOUNT",
            "https://xy12345.snowflakecomputing.com",
            "SNOWFLAKE_ACCOUNT=https://xy12345.snowflakecomputing.com: expected an account",
        ),
        (
            "SNOWFLAKE_AUTHENTICATOR",
            "okta",
            "SNOWFLAKE_AUTHENTICATOR=okta: expected one of snowflake, externalbrowser,",
        ),
        (
            "SNOWFLAKE_PRIVATE_KEY_FILE",
            "/nonexistent/rsa_key.p8",
            "SNOWFLAKE_PRIVATE_KEY_FILE=/nonexistent/rsa_key.p8: expected the path of a private",
        ),
        ("SNOWFLAKE_ROLE", " ANALYST", "SNOWFLAKE_ROLE=' ANALYST': expected a name without"),
        ("SNOWFLAKE_DATABASE", "DB\n", "SNOWFLAKE_DATABASE='DB\\n': expected a name without"),
        ("SNOWFLAKE_WAREHOUSE", "   ", "SNOWFLAKE_WAREHOUSE is set but blank"),
        ("SNOWFLAKE_USER", "\t", "SNOWFLAKE_USER is set but blank"),
    ],
)
def test_malformed_variable_is_named_with_what_was_expected(name, value, expected):
    with pytest.raises(SourceError) as e:
        env_plan(**{name: value})
    assert e.value.headline == "Data source check failed"
    assert str(e.value).startswith("Invalid Snowflake environment variable:\n" + expected)


def test_a_secret_variable_is_checked_without_showing_its_value():
    secret = "pw-51f0a7c2"
    with pytest.raises(SourceError) as e:
        env_plan(
            SNOWFLAKE_PASSWORD=secret + "\n",
            SNOWFLAKE_TOKEN=" ",
            SNOWFLAKE_PORT="x",
            SNOWFLAKE_HOST="a b",
        )
    message = str(e.value)
    assert secret not in message
    assert message.splitlines() == [
        "Invalid Snowflake environment variables:",
        "SNOWFLAKE_PASSWORD contains a line break (read from a file with its trailing "
        "newline?); its value is not shown",
        "SNOWFLAKE_TOKEN is set but blank",
        "SNOWFLAKE_HOST=a b: expected a host name like 'myorg-myaccount.snowflakecomputing.com' "
        "(no scheme, port or path)",
        "SNOWFLAKE_PORT=x: expected an integer port 1-65535",
    ]


def test_well_formed_variables_pass(tmp_path):
    key = tmp_path / "rsa_key.p8"
    key.write_text("not really a key")
    how, kwargs, _ = env_plan(
        SNOWFLAKE_PORT="443",
        SNOWFLAKE_PROTOCOL="HTTPS",
        SNOWFLAKE_HOST="myorg-myaccount.privatelink.snowflakecomputing.com",
        SNOWFLAKE_ACCOUNT="xy12345.us-east-1.aws",
        SNOWFLAKE_AUTHENTICATOR="https://acme.okta.com",
        SNOWFLAKE_PRIVATE_KEY_FILE=str(key),
        SNOWFLAKE_ROLE="ANALYST",
        SNOWFLAKE_DATABASE='"My DB"',
    )
    assert how == "env"
    assert kwargs["port"] == 443 and kwargs["protocol"] == "https"
    for authenticator in ("SNOWFLAKE_JWT", "externalbrowser", "oauth"):
        env_plan(SNOWFLAKE_AUTHENTICATOR=authenticator)
    env_plan(SNOWFLAKE_HOST="127.0.0.1")
    env_plan(SNOWFLAKE_HOST="[::1]")


def test_connection_name_path_does_not_read_the_env_values(snowflake_home):
    # SNOWFLAKE_PORT is not used with connection_name: a stray value there is no error.
    how, _, _ = sf.connection_plan(
        data_for("SELECT 1"), {"SNOWFLAKE_HOME": str(snowflake_home), "SNOWFLAKE_PORT": "80a"}
    )
    assert how == "connection_name"


def test_snowflake_home_must_be_a_folder(tmp_path):
    not_a_folder = tmp_path / "connections.toml"
    not_a_folder.write_text("[fakesnow]\n")
    with pytest.raises(SourceError) as e:
        sf.connection_plan(data_for("SELECT 1"), {"SNOWFLAKE_HOME": str(not_a_folder)})
    assert str(e.value) == (
        "SNOWFLAKE_HOME=%s: expected the folder holding connections.toml, found a file"
        % not_a_folder
    )


# ------------------------------------------------------------------ Outerbounds integration


class StandInSnowflake(object):
    """Stands in for Outerbounds' ``metaflow.Snowflake``: a context manager for a connection."""

    created = []

    def __init__(self, server, fail_with=None, **kwargs):
        self.server, self.fail_with, self.kwargs = server, fail_with, kwargs
        self.closed = False
        StandInSnowflake.created.append(self)

    def __enter__(self):
        if self.fail_with:
            raise RuntimeError(self.fail_with)
        self.connection = self.server.connect(database=self.kwargs.get("database"), schema="PUBLIC")
        return self.connection

    def __exit__(self, *exc):
        self.connection.close()
        self.closed = True


def install_stand_in(monkeypatch, factory):
    import metaflow

    StandInSnowflake.created = []
    monkeypatch.setattr(metaflow, "Snowflake", factory, raising=False)


def test_integration_wins_and_is_closed(snowflake_home, warehouse, fakesnow_server, monkeypatch):
    install_stand_in(monkeypatch, lambda **kw: StandInSnowflake(fakesnow_server, **kw))
    warehouse.insert((1, "a", decimal.Decimal("1"), datetime.datetime(2024, 1, 1)))
    data = dict(
        data_for("SELECT COUNT(*) FROM EVENTS"),
        integration="snowflake-prod",
        database=warehouse.database,
    )
    observation, session = run_check(data)
    assert observation.value == "1"
    (used,) = StandInSnowflake.created
    assert used.kwargs == {"integration": "snowflake-prod", "database": warehouse.database}
    assert used.closed
    assert session.requests[0]["via"] == "integration"


def test_integration_error_does_not_show_the_password(snowflake_home, fakesnow_server, monkeypatch):
    monkeypatch.setenv("SNOWFLAKE_PASSWORD", "pw-from-env-9f8e")
    install_stand_in(
        monkeypatch,
        lambda **kw: StandInSnowflake(
            fakesnow_server, fail_with="login failed for password pw-from-env-9f8e", **kw
        ),
    )
    data = dict(data_for("SELECT 1"), integration="snowflake-prod")
    with pytest.raises(SourceError) as e:
        run_check(data)
    assert str(e.value) == (
        "Could not connect to Snowflake via integration 'snowflake-prod': "
        "login failed for password [redacted]"
    )


def test_integration_without_outerbounds_extension(snowflake_home, monkeypatch):
    import metaflow

    monkeypatch.delattr(metaflow, "Snowflake", raising=False)
    data = dict(data_for("SELECT 1"), integration="snowflake-prod")
    with pytest.raises(SourceError) as e:
        run_check(data)
    assert "the Outerbounds extension is not installed" in str(e.value)
    assert "`from metaflow import Snowflake` failed" in str(e.value)


def test_s3_path_does_not_import_the_connector(tmp_path):
    import subprocess

    code = (
        "import sys, flowproject, flowproject.sources.s3, flowproject.decorators;"
        "from flowproject.config import parse_flowconfig;"
        "print(any(m == 'snowflake' or m.startswith('snowflake.') for m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


# ------------------------------------------------------------------ package decorator


def spec(name, **kwargs):
    return (name, "metaflow.plugins.x", [], kwargs)


def test_plain_run_adds_no_package_decorator():
    assert connector_package_spec([spec("source_session")], version="4.8.1") is None


def test_pypi_environment_gets_the_connector():
    # --environment=pypi/conda attach an empty @conda to every step.
    assert connector_package_spec([spec("conda", packages={})], version="4.8.1") == (
        "pypi",
        {"packages": {CONNECTOR_PACKAGE: "4.8.1"}},
    )


def test_existing_pypi_packages_are_kept_and_user_pin_wins():
    got = connector_package_spec(
        [spec("conda"), spec("pypi", packages={"pandas": "2.2.0"}, python="3.11")],
        version="4.8.1",
    )
    assert got == (
        "pypi",
        {"packages": {"pandas": "2.2.0", CONNECTOR_PACKAGE: "4.8.1"}, "python": "3.11"},
    )
    pinned = [spec("pypi", packages={CONNECTOR_PACKAGE: "3.12.0"})]
    assert connector_package_spec(pinned, version="4.8.1") is None


def test_conda_packages_get_the_connector_from_conda():
    got = connector_package_spec([spec("conda", packages={"numpy": "1.26"})], version="4.8.1")
    assert got == ("conda", {"packages": {"numpy": "1.26", CONNECTOR_PACKAGE: "4.8.1"}})


PROBE = """
# Print the @pypi/@conda decorators of each step once Metaflow initialised them, then stop.
import runpy, sys
import metaflow.decorators as d
orig = d._init_step_decorators
def wrapped(flow, graph, environment, *a, **k):
    orig(flow, graph, environment, *a, **k)
    for step in flow:
        print("STEP", step.__name__, sorted(
            (x.name, sorted((x.attributes.get("packages") or {}).items()))
            for x in step.decorators if x.name in ("pypi", "conda")))
    raise SystemExit(0)
d._init_step_decorators = wrapped
sys.argv = ["sensorflow.py"] + sys.argv[1:]
runpy.run_path(%r, run_name="__main__")
"""


@pytest.mark.parametrize("environment", ["local", "pypi"])
def test_connector_package_follows_the_environment(tmp_path, environment):
    import os
    import subprocess

    from conftest import REPO

    from flowproject.decorators import connector_version
    from flowproject.environment import installed_version

    (tmp_path / "probe.py").write_text(PROBE % os.path.join(REPO, "sensorflow.py"))
    (tmp_path / "flowconfig.toml").write_text(
        config_text(['template = "row_count"', 'connection_name = "x"'], {"table": "T"})
    )
    env = dict(os.environ, METAFLOW_USER="tester", METAFLOW_HOME=str(tmp_path / "mf"))
    env["METAFLOW_DATASTORE_SYSROOT_LOCAL"] = str(tmp_path)  # never a .metaflow higher up
    env["PYTHONPATH"] = REPO + os.pathsep + env.get("PYTHONPATH", "")
    argv = [sys.executable, "probe.py", "--environment=%s" % environment]
    argv += ["--config", "flowconfig", "flowconfig.toml", "run"]
    out = subprocess.run(argv, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    steps = dict(
        line.split(" ", 2)[1:] for line in out.stdout.splitlines() if line.startswith("STEP ")
    )
    assert set(steps) == {"start", "announce_change", "end"}, out.stdout + out.stderr
    if environment == "local":
        assert steps == {"start": "[]", "announce_change": "[]", "end": "[]"}
    else:
        assert steps["start"] == str(
            [("conda", []), ("pypi", [(CONNECTOR_PACKAGE, connector_version())])]
        )
        assert steps["announce_change"] == str(
            [("conda", []), ("pypi", [("tenacity", installed_version("tenacity", ""))])]
        )
        assert steps["end"] == str([("conda", [])])  # end publishes nothing
