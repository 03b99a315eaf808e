"""Snowflake source: run one SQL template from ``sql/`` and compare its result.

``[data] template = "<name>"`` names ``sql/<name>.sql``; ``[data.params]`` supplies its bind
parameters, written ``%(name)s`` in the SQL and bound by the connector (pyformat), never by
Python string formatting. The template is read when the flow loads and its text is carried in
the validated config (``query_text``), so a remote task needs no ``.sql`` file.

The connection comes from the first of:

1. ``integration``: an Outerbounds Snowflake integration (``from metaflow import Snowflake``);
2. ``connection_name``: an entry of the connector's ``connections.toml``
   (``$SNOWFLAKE_HOME/connections.toml``, else ``~/.snowflake/connections.toml``);
3. the ``SNOWFLAKE_*`` environment variables (account, user, password / private key file /
   authenticator, role, warehouse, database, schema).

``warehouse``, ``database``, ``schema`` and ``role`` in ``[data]`` override the connection's.
Secrets never live in ``flowconfig.toml``; a password, token or private key there is a config
error. The connector is imported only when a check runs, so the S3 path never imports it.

The result becomes one comparable string: one cell is its value; several cells or rows are
canonical JSON rows, sorted so row order does not matter; datetimes are ISO-8601, decimals
exact; an empty result or NULL is the absent state.
"""

import datetime
import decimal
import hashlib
import json
import os
import re
import sys
import time
from contextlib import contextmanager
from pathlib import Path

from ..exceptions import SourceError
from .observation import Observation

TYPE = "snowflake"

# What a step checking Snowflake imports, for ``--environment=pypi`` / ``conda`` (fakesnow
# 0.12, used by the tests, does not import with connector 5.x).
PACKAGES = {"snowflake-connector-python": ">=3.12,<5"}

# Keys that would hold a secret. Named in the error, their value is never echoed.
SECRET_KEY_PATTERN = (
    r"(?i)^(password|passcode|token|private_key.*|.*_password|.*_token|.*secret.*)$"
)
SECRET_KEY_RE = re.compile(SECRET_KEY_PATTERN)

# A template name: a file name in sql/, without folders.
TEMPLATE_NAME_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$")

# A pyformat bind parameter in the SQL text.
PLACEHOLDER_RE = re.compile(r"%\(([^)]*)\)s")

# Above this length the comparable value is a digest of the canonical result (an event
# payload is no place for a whole table); the summary still tells the row count.
MAX_VALUE_CHARS = 1024

CONFIG_SCHEMA = {
    "type": "object",
    "properties": {
        "type": {"const": "snowflake"},
        "template": {"type": "string", "minLength": 1},
        "params": {
            "type": "object",
            "propertyNames": {"pattern": "^[A-Za-z_][A-Za-z0-9_]*$"},
            # A bind value is a scalar; TOML dates, times, tables and lists are not.
            "additionalProperties": {
                "type": ["string", "integer", "number", "boolean"],
                "x-expected": "a string, integer, float or boolean",
            },
        },
        "integration": {"type": "string", "minLength": 1},
        "connection_name": {"type": "string", "minLength": 1},
        "warehouse": {"type": "string", "minLength": 1},
        "database": {"type": "string", "minLength": 1},
        "schema": {"type": "string", "minLength": 1},
        "role": {"type": "string", "minLength": 1},
        "query_timeout": {"type": "integer", "minimum": 1, "maximum": 86400},
    },
    "required": ["type", "template"],
    # Secret-looking keys are reported by validate() with a message of their own.
    "patternProperties": {SECRET_KEY_PATTERN: True},
    "additionalProperties": False,
}

DEFAULT_QUERY_TIMEOUT = 600

# SNOWFLAKE_* variable -> connector keyword, for the environment path.
ENV_PARAMS = {
    "SNOWFLAKE_ACCOUNT": "account",
    "SNOWFLAKE_USER": "user",
    "SNOWFLAKE_PASSWORD": "password",
    "SNOWFLAKE_PRIVATE_KEY_FILE": "private_key_file",
    "SNOWFLAKE_PRIVATE_KEY_FILE_PWD": "private_key_file_pwd",
    "SNOWFLAKE_AUTHENTICATOR": "authenticator",
    "SNOWFLAKE_TOKEN": "token",
    "SNOWFLAKE_ROLE": "role",
    "SNOWFLAKE_WAREHOUSE": "warehouse",
    "SNOWFLAKE_DATABASE": "database",
    "SNOWFLAKE_SCHEMA": "schema",
    "SNOWFLAKE_HOST": "host",
    "SNOWFLAKE_PORT": "port",
    "SNOWFLAKE_PROTOCOL": "protocol",
}

# Connector keywords whose values are secrets: scrubbed from every message we raise.
SECRET_PARAMS = ("password", "private_key_file_pwd", "token", "passcode", "private_key")

# SNOWFLAKE_AUTHENTICATOR values the connector (4.8) accepts, besides an Okta URL.
AUTHENTICATORS = (
    "snowflake",
    "externalbrowser",
    "snowflake_jwt",
    "oauth",
    "oauth_authorization_code",
    "oauth_client_credentials",
    "username_password_mfa",
    "workload_identity",
    "programmatic_access_token",
    "pat_with_external_session",
)

# A host name or an IP address, without scheme, port or path.
HOST_RE = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9.-]*[A-Za-z0-9])?$|^\[[0-9A-Fa-f:.]+\]$")

# An account identifier: 'myorg-myaccount', 'xy12345.us-east-1.aws', 'xy12345'.
ACCOUNT_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


# --------------------------------------------------------------------------------------
# Templates
# --------------------------------------------------------------------------------------


def sql_dir():
    """The repository's ``sql/`` folder (next to the ``flowproject`` package)."""
    import flowproject

    return Path(flowproject.__file__).resolve().parent.parent / "sql"


def available_templates(folder=None):
    """Names of the templates in ``sql/``, sorted."""
    folder = Path(folder) if folder else sql_dir()
    if not folder.is_dir():
        return []
    return sorted(p.stem for p in folder.glob("*.sql") if p.is_file())


def template_path(name, folder=None):
    """The file of template ``name``; raises ``ValueError`` with a readable reason.

    Parameters
    ----------
    name : str
        ``<name>`` or ``<name>.sql``; resolved only inside ``sql/``.
    folder : str, optional
        Templates folder; the repository's ``sql/`` by default.
    """
    folder = Path(folder) if folder else sql_dir()
    if not TEMPLATE_NAME_RE.match(name) or ".." in name or os.path.isabs(name):
        raise ValueError(
            "expected the name of a file in sql/ (no folders, no '..'), found %r" % name
        )
    stem = name[: -len(".sql")] if name.endswith(".sql") else name
    path = (folder / (stem + ".sql")).resolve()
    # A symlink in sql/ pointing elsewhere is still outside sql/.
    if path.parent != folder.resolve() or not path.is_file():
        available = available_templates(folder)
        raise ValueError(
            "no template %r in %s; available: %s"
            % (stem, folder, ", ".join(available) if available else "(none)")
        )
    return path


def placeholders(sql):
    """The bind parameter names used in ``sql`` (``%(name)s``), sorted."""
    return sorted(set(PLACEHOLDER_RE.findall(sql)))


# --------------------------------------------------------------------------------------
# Config
# --------------------------------------------------------------------------------------


def secret_keys(table, prefix="data"):
    """Dotted names of the keys of ``table`` (recursively) that look like secrets."""
    found = []
    for key, value in table.items():
        name = "%s.%s" % (prefix, key)
        if SECRET_KEY_RE.match(str(key)):
            found.append(name)
        elif isinstance(value, dict):
            found += secret_keys(value, name)
    return found


def validate(data):
    """Checks beyond the schema: no secrets, template inside ``sql/``, params match it."""
    problems = [
        "%s: secrets never go in flowconfig.toml; use an Outerbounds integration, a "
        "connections.toml entry (connection_name) or SNOWFLAKE_* environment variables" % key
        for key in secret_keys(data)
    ]
    name = data.get("template")
    if not isinstance(name, str) or not name:
        return problems
    try:
        sql = template_path(name).read_text(encoding="utf-8")
    except ValueError as e:
        return problems + ["data.template: %s" % e]
    params = data.get("params")
    if not isinstance(params, dict):
        params = {}
    used = placeholders(sql)
    for missing in [p for p in used if p not in params]:
        problems.append(
            "data.params.%s: missing; template %r binds %%(%s)s" % (missing, name, missing)
        )
    for unused in sorted(p for p in params if p not in used):
        problems.append(
            "data.params.%s: template %r has no %%(%s)s placeholder (it uses: %s)"
            % (unused, name, unused, ", ".join(used) if used else "none")
        )
    return problems


def normalize(data):
    """Embed the template's SQL (``query_text``) and fill defaults."""
    data = dict(data)
    path = template_path(data["template"])
    data["template"] = path.stem
    data["query_text"] = path.read_text(encoding="utf-8")
    data["params"] = dict(data.get("params", {}))
    data.setdefault("query_timeout", DEFAULT_QUERY_TIMEOUT)
    return data


def connection_path(data, env=None):
    """Which connection path ``data`` takes, for people: never a secret."""
    env = os.environ if env is None else env
    if data.get("integration"):
        return "integration %r" % data["integration"]
    if data.get("connection_name"):
        return "connection_name %r" % data["connection_name"]
    if env.get("SNOWFLAKE_ACCOUNT"):
        return "SNOWFLAKE_* environment (account %r)" % env["SNOWFLAKE_ACCOUNT"]
    return "no connection configured"


def describe(data):
    """``snowflake sql/<template>.sql (params) via <connection>``: what this sensor watches."""
    params = ", ".join("%s=%r" % kv for kv in sorted(data.get("params", {}).items()))
    return "snowflake sql/%s.sql%s via %s" % (
        data["template"],
        " (%s)" % params if params else "",
        connection_path(data),
    )


def normalized_sql(sql):
    """``sql`` without comments and with runs of whitespace as one space, outside quotes.

    Two templates that differ only in layout or comments query the same thing.
    """
    parts, i, n = [], 0, len(sql)  # text pieces; None stands for a separator
    while i < n:
        c = sql[i]
        if c in "'\"":  # a string literal or quoted identifier ('' and "" escape the quote)
            j = i + 1
            while j < n and not (sql[j] == c and sql[j + 1 : j + 2] != c):
                j += 2 if sql[j] == c else 1
            parts.append(sql[i : j + 1])
            i = j + 1
        elif sql.startswith(("--", "//"), i):
            j = sql.find("\n", i)
            i = n if j < 0 else j
            parts.append(None)
        elif sql.startswith("/*", i):
            j = sql.find("*/", i + 2)
            i = n if j < 0 else j + 2
            parts.append(None)
        elif c.isspace():
            i += 1
            parts.append(None)
        else:
            parts.append(c)
            i += 1
    words, text = [], []
    for part in parts + [None]:
        if part is not None:
            text.append(part)
        elif text:
            words.append("".join(text))
            text = []
    if words and words[-1].endswith(";"):
        words[-1] = words[-1][:-1]
        if not words[-1]:
            words.pop()
    return " ".join(words)


def _connection_defaults(data, env):
    """Account, database, schema and role of the configured connection, where known."""
    keys = ("account", "database", "schema", "role")
    if data.get("integration"):
        return {"integration": data["integration"]}
    if data.get("connection_name"):
        try:
            entry = (_read_connections(connections_file(env)) or {}).get(data["connection_name"])
        except SourceError:
            entry = None
        found = {k: str(entry[k]) for k in keys if isinstance(entry, dict) and entry.get(k)}
        return dict(found, connection_name=data["connection_name"])
    return {p: env[k] for k, p in ENV_PARAMS.items() if p in keys and env.get(k)}


def identity(data, env=None):
    """What the value depends on: account, database, schema, role, the SQL and its params.

    The SQL is compared without comments and extra whitespace; the warehouse, the timeout
    and the credentials change how the query runs, not what it returns. Never holds a secret.
    """
    env = os.environ if env is None else env
    found = dict(_connection_defaults(data, env), **_overrides(data))
    found.pop("warehouse", None)
    found.update(
        type=TYPE,
        sql=normalized_sql(data["query_text"]),
        params=dict(sorted((data.get("params") or {}).items())),
    )
    return found


def absent_message(data):
    """What an absent observation means, for people."""
    return "the query sql/%s.sql returned no rows, or only NULLs" % data["template"]


# --------------------------------------------------------------------------------------
# Connection: integration, then connection_name, then SNOWFLAKE_* variables.
# --------------------------------------------------------------------------------------


def connections_file(env=None):
    """The ``connections.toml`` the connector reads.

    Under ``$SNOWFLAKE_HOME``, else ``~/.snowflake``.
    """
    env = os.environ if env is None else env
    home = env.get("SNOWFLAKE_HOME") or "~/.snowflake"
    return Path(home).expanduser() / "connections.toml"


def _read_connections(path):
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover - exercised on Python 3.10 only
        import tomli as tomllib

    try:
        with open(path, "rb") as f:
            return tomllib.load(f)
    except FileNotFoundError:
        return None
    except (OSError, tomllib.TOMLDecodeError) as e:
        # The parser's message quotes the offending line, which may hold a password.
        raise SourceError("Could not read %s: %s" % (path, e.__class__.__name__)) from None


def _overrides(data):
    return {k: data[k] for k in ("warehouse", "database", "schema", "role") if data.get(k)}


def _session_parameters():
    # QUERY_TAG lets a Snowflake admin find (and cost) the sensor's queries.
    return {"QUERY_TAG": "flowproject-sensor"}


def connection_plan(data, env=None):
    """How to connect: ``(how, kwargs, secrets)`` without connecting.

    Parameters
    ----------
    data : dict
        The normalized ``[data]`` table.
    env : dict, optional
        Environment variables; ``os.environ`` by default.

    Returns
    -------
    tuple
        ``how`` is ``"integration"``, ``"connection_name"`` or ``"env"``; ``kwargs`` the
        arguments for ``Snowflake()`` / ``snowflake.connector.connect``; ``secrets`` the secret
        values involved, to scrub from messages.
    """
    env = os.environ if env is None else env
    secrets = [env[k] for k, p in ENV_PARAMS.items() if p in SECRET_PARAMS and env.get(k)]
    if data.get("integration"):
        return "integration", dict(_overrides(data), integration=data["integration"]), secrets
    if data.get("connection_name"):
        name = data["connection_name"]
        check_snowflake_home(env)
        path = connections_file(env)
        connections = _read_connections(path)
        if connections is None:
            raise SourceError(
                "data.connection_name = %r: %s does not exist (set SNOWFLAKE_HOME to the "
                "folder holding connections.toml)." % (name, path)
            )
        entry = connections.get(name)
        if not isinstance(entry, dict):
            raise SourceError(
                "data.connection_name = %r: no such entry in %s; entries: %s"
                % (name, path, ", ".join(sorted(connections)) or "(none)")
            )
        secrets += [str(entry[k]) for k in SECRET_PARAMS if entry.get(k)]
        kwargs = dict(connection_name=name, connections_file_path=path, **_overrides(data))
        return "connection_name", kwargs, secrets
    check_environment(env)
    kwargs = {p: env[k] for k, p in ENV_PARAMS.items() if env.get(k)}
    if not (kwargs.get("account") and kwargs.get("user")):
        raise SourceError(
            "No Snowflake connection configured: set [data] integration (an Outerbounds "
            "integration), [data] connection_name (an entry of %s), or the environment "
            "variables SNOWFLAKE_ACCOUNT and SNOWFLAKE_USER with SNOWFLAKE_PASSWORD, "
            "SNOWFLAKE_PRIVATE_KEY_FILE or SNOWFLAKE_AUTHENTICATOR." % connections_file(env)
        )
    if "port" in kwargs:
        kwargs["port"] = int(kwargs["port"])
    if "protocol" in kwargs:
        kwargs["protocol"] = kwargs["protocol"].lower()
    kwargs.update(_overrides(data))
    return "env", kwargs, secrets


def _env_value_problem(name, value):
    """What is wrong with the environment variable ``name`` = ``value``, or None.

    A secret's value is never part of the answer.
    """
    param = ENV_PARAMS.get(name)
    if param in SECRET_PARAMS:
        if not value.strip():
            return "%s is set but blank" % name
        if "\n" in value or "\r" in value:
            return (
                "%s contains a line break (read from a file with its trailing newline?); "
                "its value is not shown" % name
            )
        return None
    plain = value == value.strip() and value.isprintable()
    shown = ("%s=%s" if plain else "%s=%r") % (name, value)
    if not value.strip():
        return "%s is set but blank" % name
    if name == "SNOWFLAKE_PORT":
        if not (value.isascii() and value.isdigit() and 1 <= int(value) <= 65535):
            return "%s: expected an integer port 1-65535" % shown
    elif name == "SNOWFLAKE_PROTOCOL":
        if value.lower() not in ("https", "http"):
            return "%s: expected 'https' or 'http'" % shown
    elif name == "SNOWFLAKE_HOST":
        if not HOST_RE.match(value):
            return (
                "%s: expected a host name like 'myorg-myaccount.snowflakecomputing.com' "
                "(no scheme, port or path)" % shown
            )
    elif name == "SNOWFLAKE_ACCOUNT":
        if not ACCOUNT_RE.match(value):
            return (
                "%s: expected an account identifier like 'myorg-myaccount' or "
                "'xy12345.us-east-1' (no scheme or path)" % shown
            )
    elif name == "SNOWFLAKE_AUTHENTICATOR":
        if value.lower() not in AUTHENTICATORS and not value.lower().startswith("https://"):
            return "%s: expected one of %s, or an Okta URL 'https://<org>.okta.com'" % (
                shown,
                ", ".join(AUTHENTICATORS),
            )
    elif name == "SNOWFLAKE_PRIVATE_KEY_FILE":
        if not os.path.isfile(os.path.expanduser(value)):
            return "%s: expected the path of a private key file; there is no such file" % shown
    elif not plain:  # user, role, warehouse, database, schema
        return "%s: expected a name without surrounding spaces or control characters" % shown
    return None


def check_environment(env=None):
    """Check the ``SNOWFLAKE_*`` variables the environment connection path reads.

    Parameters
    ----------
    env : dict, optional
        Environment variables; ``os.environ`` by default.

    Raises
    ------
    SourceError
        Naming each malformed variable and what was expected (never a secret's value).
    """
    env = os.environ if env is None else env
    problems = [_env_value_problem(name, env[name]) for name in ENV_PARAMS if env.get(name)]
    problems = [p for p in problems if p]
    if problems:
        raise SourceError(
            "Invalid Snowflake environment variable%s:\n%s"
            % ("s" if len(problems) > 1 else "", "\n".join(problems))
        )


def check_snowflake_home(env=None):
    """``SNOWFLAKE_HOME``, when set, must be a folder (it holds ``connections.toml``)."""
    env = os.environ if env is None else env
    home = env.get("SNOWFLAKE_HOME")
    if not home:
        return
    if not home.strip() or not home.isprintable():
        raise SourceError("SNOWFLAKE_HOME=%r: expected the folder holding connections.toml" % home)
    path = Path(home).expanduser()
    if path.exists() and not path.is_dir():
        raise SourceError(
            "SNOWFLAKE_HOME=%s: expected the folder holding connections.toml, found a file" % home
        )


def redact(text, secrets):
    """``text`` with every secret value replaced by ``[redacted]``."""
    text = str(text)
    for secret in sorted(set(s for s in secrets if s), key=len, reverse=True):
        text = text.replace(secret, "[redacted]")
    return text


def _outerbounds_snowflake():
    try:
        from metaflow import Snowflake
    except ImportError:
        raise SourceError(
            "data.integration is set, but the Outerbounds extension is not installed "
            "(`from metaflow import Snowflake` failed): install the Outerbounds package, or "
            "use data.connection_name or SNOWFLAKE_* environment variables instead."
        ) from None
    return Snowflake


def connect(data, env=None):
    """Open a connection for ``data``.

    Returns
    -------
    tuple
        ``(connection, close, how, secrets)``: ``close()`` releases it.
    """
    how, kwargs, secrets = connection_plan(data, env)
    try:
        if how == "integration":
            manager = _outerbounds_snowflake()(**kwargs)
            connection = manager.__enter__()
            return connection, lambda: manager.__exit__(None, None, None), how, secrets
        import snowflake.connector

        kwargs.setdefault("session_parameters", _session_parameters())
        connection = snowflake.connector.connect(**kwargs)
        return connection, connection.close, how, secrets
    except SourceError:
        raise
    except Exception as e:
        raise SourceError(
            "Could not connect to Snowflake via %s: %s"
            % (connection_path(data, env), redact(_error_text(e), secrets))
        ) from None


def _error_text(e):
    msg = getattr(e, "msg", None) or str(e) or e.__class__.__name__
    return " ".join(str(msg).split())


class SnowflakeSession(object):
    """The connection of one step, opened on first use, and the queries it ran."""

    def __init__(self, data, env=None):
        self.data = data
        self.env = env
        self.requests = []
        self.secrets = []
        self._connection = None
        self._close = None

    @property
    def connection(self):
        if self._connection is None:
            started = time.monotonic()
            self._connection, self._close, how, self.secrets = connect(self.data, self.env)
            self.record("connect", time.monotonic() - started, via=how)
        return self._connection

    def record(self, what, seconds, **facts):
        self.requests.append({"request": what, "seconds": round(seconds, 4), **facts})

    def close(self):
        if self._close is not None:
            try:
                self._close()
            finally:
                self._connection = self._close = None


@contextmanager
def open_session(data):
    """A Snowflake session for ``data``; connects on the first query, closes on exit."""
    session = SnowflakeSession(data)
    try:
        yield session
    finally:
        session.close()


# --------------------------------------------------------------------------------------
# Results to one comparable value.
# --------------------------------------------------------------------------------------


def canonical_cell(value):
    """One cell as a string (None stays None): ISO-8601 times, exact decimals."""
    if value is None:
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (datetime.datetime, datetime.date, datetime.time)):
        return value.isoformat()
    if isinstance(value, decimal.Decimal):
        # 'f' keeps every digit and never switches to exponent notation.
        return format(value, "f")
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, (bytes, bytearray)):
        return bytes(value).hex()
    if isinstance(value, (dict, list)):
        return json.dumps(value, sort_keys=True, default=str)
    return str(value)


def normalize_result(rows):
    """The comparable value of a query result.

    Parameters
    ----------
    rows : list of tuple
        From ``cursor.fetchall()``.

    Returns
    -------
    str or None
        One cell: its canonical text. Several cells or rows: JSON of the canonical rows,
        sorted (row order does not matter), or its sha256 when longer than
        ``MAX_VALUE_CHARS``. No row, or only NULLs: None (absent).
    """
    rows = [[canonical_cell(c) for c in row] for row in rows]
    if not rows or all(c is None for row in rows for c in row):
        return None
    if len(rows) == 1 and len(rows[0]) == 1:
        return rows[0][0]
    lines = sorted(json.dumps(row, separators=(",", ":")) for row in rows)
    text = "[" + ",".join(lines) + "]"
    if len(text) > MAX_VALUE_CHARS:
        return "sha256:" + hashlib.sha256(text.encode("utf-8")).hexdigest()
    return text


def run_query(session, data):
    """Run the template once; return ``(rows, column names, seconds)``."""
    sql = data["query_text"]
    # Without parameters the connector must not %-format the text (a literal '%' in a LIKE).
    params = data.get("params") or None
    connection = session.connection
    started = time.monotonic()
    try:
        cursor = connection.cursor()
        try:
            cursor.execute(sql, params, timeout=data.get("query_timeout"))
            rows = cursor.fetchall()
            columns = [d[0] for d in (cursor.description or [])]
        finally:
            cursor.close()
    except Exception as e:
        session.record(
            "query", time.monotonic() - started, template=data["template"], sql=sql, ok=False
        )
        raise SourceError(
            "Snowflake query sql/%s.sql failed: %s"
            % (data["template"], redact(_error_text(e), session.secrets))
        ) from None
    seconds = time.monotonic() - started
    session.record("query", seconds, template=data["template"], sql=sql, rows=len(rows))
    return rows, columns, seconds


def check(data, session, cursor=None):
    """Run the configured template once and turn its result into an ``Observation``.

    Parameters
    ----------
    data : dict
        The normalized ``[data]`` table.
    session : SnowflakeSession
        From ``open_session``.
    cursor : dict, optional
        Unused: every check runs the query.

    Returns
    -------
    Observation
        ``value`` as ``normalize_result``; ``summary`` with the row count, columns and
        query duration.
    """
    rows, columns, seconds = run_query(session, data)
    value = normalize_result(rows)
    summary = {
        "state": "absent" if value is None else "present",
        "template": data["template"],
        "rows": len(rows),
        "columns": columns,
        "query_seconds": round(seconds, 4),
    }
    return Observation(value, summary)
