"""Load and validate ``flowconfig.toml``.

``parse_flowconfig`` is the parser of ``BaseFlow.flowconfig``: Metaflow calls it when the flow
is loaded, before any step runs, so a bad file stops the flow before it touches a data source
or publishes anything. Every problem in the file is reported at once, one line each, naming the
key, what was expected and what was found.
"""

import datetime
import difflib
import functools
import keyword
import os
import re
import sys
from typing import Any, NamedTuple

from .cron import cron_problems
from .events import PUBLISH_TIMEOUT
from .exceptions import FlowConfigError
from .schema_check import surely_valid
from .sensor import DEFAULT_SOURCE
from .sources import SOURCE_TYPES, load_source

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on Python 3.10 only
    import tomli as tomllib


# Keys of the event payload that Metaflow's ArgoEvent or the sensor itself set: a payload_key
# with one of these names would be overwritten.
RESERVED_PAYLOAD_KEYS = frozenset(
    [
        "name",
        "id",
        "timestamp",
        "utc_date",
        "generated-by-metaflow",
        "change_id",
        "previous_value",
        "source",
        "state",
        "flow",
        "branch",
        "run_id",
    ]
)

# Names a payload_key cannot take because Metaflow rejects them as a Parameter name: the options
# every flow's command line has (metaflow/parameters.py, checked with '-' and '_'), the name
# Argo Workflows reserves (argo_workflows.py), and FlowSpec's own members and _NON_PARAMETERS.
METAFLOW_RESERVED_PARAMETER_NAMES = frozenset(
    [
        "params",
        "with",
        "tag",
        "namespace",
        "obj",
        "tags",
        "decospecs",
        "run_id_file",
        "max_num_splits",
        "max_workers",
        "max_log_size",
        "user_namespace",
        "run_id",
        "task_id",
        "runner_attribute_file",
    ]
)
ARGO_RESERVED_PARAMETER_NAMES = frozenset(["script"])
FLOWSPEC_MEMBER_NAMES = frozenset(
    ["cmd", "foreach_stack", "index", "input", "merge_artifacts", "name", "next", "script_name"]
)

# Metaflow's @project accepts names up to this length (VALID_NAME_LEN in project_decorator.py).
PROJECT_NAME_MAX_LENGTH = 128

TOP_SCHEMA = {
    "type": "object",
    "properties": {
        "project_name": {
            "type": "string",
            "pattern": "^[a-z0-9_]+$",
            "maxLength": PROJECT_NAME_MAX_LENGTH,
            "x-expected": "lowercase letters, digits and underscores (a Metaflow @project name)",
        },
        "data": {"type": "object"},
        "sources": {"type": "object"},
        "sensor": {"type": "object"},
        "trigger": {"type": "object"},
    },
    "required": ["project_name", "sensor"],
    "additionalProperties": False,
}

SENSOR_SCHEMA = {
    "type": "object",
    "properties": {
        "cron_schedule": {"type": "string"},
        "event_name": {
            "type": "string",
            "pattern": "^[A-Za-z0-9][A-Za-z0-9_.-]*$",
            "x-expected": "letters, digits, '_', '-' and '.'",
        },
        "payload_key": {
            "type": "string",
            # Lowercase: Metaflow lowercases parameter names on Argo, so 'dataVersion' in the
            # payload would never reach the Parameter. No leading '_': Metaflow skips those.
            "pattern": "^[a-z][a-z0-9_]*$",
            "x-expected": "a lowercase letter, then lowercase letters, digits or '_' (it becomes "
            "a Parameter of the triggered flow)",
        },
        "settle_checks": {"type": "integer", "minimum": 0, "maximum": 1000},
        "namespaced_events": {"type": "boolean"},
        "history_size": {"type": "integer", "minimum": 1, "maximum": 1000},
        "card": {"type": "boolean"},
        "on_first_check": {"enum": ["publish", "accept"]},
        "publish_timeout": {"type": "integer", "minimum": 1, "maximum": 600},
        "check_concurrency": {"type": "integer", "minimum": 1, "maximum": 64},
        "source_timeout": {"type": "integer", "minimum": 1, "maximum": 86400},
    },
    "required": ["cron_schedule", "event_name", "payload_key"],
    "additionalProperties": False,
}

# Keys of a [sources.<name>] table that say how that source's changes are announced; every
# other key of the table configures the source itself (its module's CONFIG_SCHEMA).
ANNOUNCE_KEYS = ("event_name", "payload_key", "settle_checks", "on_first_check")
# [sensor] keys that hold for every source (the cron, delivery, the run's bounds); in the
# multi-source form [sensor] may also give settle_checks and on_first_check as defaults.
GLOBAL_ONLY_KEYS = ("event_name", "payload_key")

# A source's name is part of its state object's path, its change ids and the card.
SOURCE_NAME_RE = re.compile(r"^[a-z][a-z0-9_]{0,63}$")
SOURCE_NAME_EXPECTED = "a lowercase letter, then at most 63 lowercase letters, digits or '_'"

SENSOR_DEFAULTS = {
    "settle_checks": 0,
    "namespaced_events": True,
    "history_size": 50,
    "card": True,
    "on_first_check": "publish",
    "publish_timeout": PUBLISH_TIMEOUT,
    "check_concurrency": 8,
    "source_timeout": 900,
}


class WatchedSource(NamedTuple):
    """One source of a sensor, as ``configured_sources`` returns it.

    Parameters
    ----------
    name : str
        ``"default"`` for ``[data]``; the ``<name>`` of ``[sources.<name>]``.
    data : dict
        The normalized source table (``type`` and the source module's keys).
    sensor : dict
        The ``[sensor]`` settings as they apply to this source: the global ones with the
        source's own ``event_name``, ``payload_key``, ``settle_checks``, ``on_first_check``.
    """

    name: str
    data: dict[str, Any]
    sensor: dict[str, Any]


def plain(value):
    """A Metaflow ``ConfigValue`` (or any nesting of them) as plain dicts."""
    if hasattr(value, "to_dict"):
        value = value.to_dict()
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [plain(v) for v in value]
    return value


def is_multi_source(config):
    """Whether ``config`` uses ``[sources.<name>]`` tables (rather than one ``[data]``)."""
    return "sources" in config and config["sources"] is not None


def configured_sources(config):
    """The sources a validated config names, in file order.

    Parameters
    ----------
    config : dict or ConfigValue
        From ``parse_flowconfig`` (a flow's ``self.flowconfig``).

    Returns
    -------
    list of WatchedSource
        One ``"default"`` source for the single-source form.
    """
    config = plain(config)
    sensor = config["sensor"]
    if not is_multi_source(config):
        return [WatchedSource(DEFAULT_SOURCE, config["data"], sensor)]
    found = []
    for name, table in config["sources"].items():
        data = {k: v for k, v in table.items() if k not in ANNOUNCE_KEYS}
        announce = {k: table[k] for k in ANNOUNCE_KEYS if k in table}
        found.append(WatchedSource(name, data, {**sensor, **announce}))
    return found


def source_named(config, name):
    """The ``WatchedSource`` called ``name``; a ``FlowConfigError`` naming the known ones."""
    sources = configured_sources(config)
    for watched in sources:
        if watched.name == name:
            return watched
    raise FlowConfigError(
        ["no source named %r; flowconfig.toml has: %s" % (name, ", ".join(w.name for w in sources))]
    )


TRIGGER_SCHEMA = {
    "type": "object",
    "properties": {
        "parameter_default": {"type": "string"},
    },
    "additionalProperties": False,
}

DATA_TYPE_SCHEMA = {
    "type": "object",
    "properties": {"type": {"enum": sorted(SOURCE_TYPES)}},
    "required": ["type"],
}

_JSON_TYPE_NAMES = {
    "string": "a string",
    "integer": "an integer",
    "number": "a number",
    "boolean": "true or false",
    "object": "a table",
    "array": "a list",
}


def _toml_type(value):
    if isinstance(value, datetime.datetime):
        return "datetime"
    if isinstance(value, datetime.date):
        return "date"
    if isinstance(value, datetime.time):
        return "time"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "float"
    if isinstance(value, str):
        return "string"
    if isinstance(value, dict):
        return "table"
    if isinstance(value, list):
        return "list"
    return type(value).__name__


def _found(value):
    if isinstance(value, (datetime.date, datetime.time)):
        return "%s %s" % (_toml_type(value), value.isoformat())
    return "%s %r" % (_toml_type(value), value)


def _expected_type(json_type):
    if isinstance(json_type, list):
        names = [_JSON_TYPE_NAMES.get(t, t) for t in json_type]
        return ", ".join(names[:-1]) + " or " + names[-1] if len(names) > 1 else names[0]
    return _JSON_TYPE_NAMES.get(json_type, json_type)


@functools.cache
def _strict_validator_class():
    """Draft 2020-12 where an integer is a TOML integer: 50.0 (a float) and true are not.

    JSON Schema counts 50.0 as an integer; a TOML file that says 50.0 means a float, and the
    code that uses the value (``range``, list slicing) fails on it at run time.
    """
    from jsonschema import Draft202012Validator, validators

    def is_integer(checker, instance):
        return isinstance(instance, int) and not isinstance(instance, bool)

    checker = Draft202012Validator.TYPE_CHECKER.redefine("integer", is_integer)
    return validators.extend(Draft202012Validator, type_checker=checker)


def schema_problems(instance, schema, prefix):
    """Validate ``instance`` against a JSON schema; return one readable line per problem.

    Parameters
    ----------
    instance : dict
        The TOML table to check.
    schema : dict
        A JSON schema (draft 2020-12). A property may carry ``x-expected``, a phrase used in
        place of its pattern in messages.
    prefix : str
        Dotted name of the table in the file (``"data"``), prepended to each key.

    Returns
    -------
    List[str]
        Problems, sorted by key.
    """
    if surely_valid(instance, schema):  # the usual case, without importing jsonschema
        return []
    problems = []
    for error in _strict_validator_class()(schema).iter_errors(instance):
        path = [prefix] if prefix else []
        path += [str(p) for p in error.absolute_path]
        key = ".".join(path) or "(file)"
        sub = error.schema if isinstance(error.schema, dict) else {}
        if error.validator == "required":
            missing = error.message.split("'")[1]
            full = ".".join(path + [missing])
            problems.append("%s: missing; this key is required" % full)
        elif error.validator == "additionalProperties":
            known = sorted(sub.get("properties", {}))
            extra = [k for k in error.instance if k not in sub.get("properties", {})]
            for name in extra:
                full = ".".join(path + [name])
                close = difflib.get_close_matches(name, known, n=1, cutoff=0.6)
                hint = (
                    "did you mean '%s'?" % close[0]
                    if close
                    else "known keys: %s" % ", ".join(known)
                )
                problems.append("%s: unknown key; %s" % (full, hint))
        elif error.validator == "enum":
            choices = ", ".join(repr(c) for c in error.validator_value)
            problems.append(
                "%s: expected one of %s, found %s" % (key, choices, _found(error.instance))
            )
        elif error.validator == "type":
            expected = sub.get("x-expected", _expected_type(error.validator_value))
            problems.append("%s: expected %s, found %s" % (key, expected, _found(error.instance)))
        elif error.validator == "pattern":
            expected = sub.get("x-expected", "a value matching %s" % error.validator_value)
            problems.append("%s: expected %s, found %r" % (key, expected, error.instance))
        elif error.validator in ("minimum", "maximum"):
            problems.append(
                "%s: expected a number %s %s, found %r"
                % (
                    key,
                    ">=" if error.validator == "minimum" else "<=",
                    error.validator_value,
                    error.instance,
                )
            )
        elif error.validator == "maxLength":
            problems.append(
                "%s: expected at most %d characters, found %d"
                % (key, error.validator_value, len(error.instance))
            )
        elif error.validator == "minItems":
            problems.append("%s: expected a non-empty list, found []" % key)
        else:
            problems.append("%s: %s" % (key, error.message))
    return sorted(set(problems))


def payload_key_problems(payload_key):
    """Why ``payload_key`` cannot name the triggered flow's Parameter (any flow's).

    The checks that depend on the flow (its steps, attributes and artifacts) run where the
    trigger is applied: ``sensor_trigger``.
    """
    key = "sensor.payload_key"
    if payload_key in RESERVED_PAYLOAD_KEYS:
        return [
            "%s: %r is set by the sensor itself; choose another name, e.g. 'value'"
            % (key, payload_key)
        ]
    if keyword.iskeyword(payload_key):
        return ["%s: %r is a Python keyword; choose another name" % (key, payload_key)]
    if payload_key in METAFLOW_RESERVED_PARAMETER_NAMES:
        return [
            "%s: %r is reserved by Metaflow (an option of every flow's command line); choose "
            "another name" % (key, payload_key)
        ]
    if payload_key in ARGO_RESERVED_PARAMETER_NAMES:
        return [
            "%s: %r is reserved by Metaflow on Argo Workflows; choose another name"
            % (key, payload_key)
        ]
    if payload_key in FLOWSPEC_MEMBER_NAMES:
        return [
            "%s: %r is a member of every Metaflow flow (FlowSpec.%s); choose another name"
            % (key, payload_key, payload_key)
        ]
    return []


def _data_problems(data, prefix, extra_schema=None):
    """Problems of one source table; ``(problems, module)`` (module None if the type is bad)."""
    type_problems = schema_problems(data, DATA_TYPE_SCHEMA, prefix)
    if type_problems:
        return type_problems, None
    module = load_source(data["type"])
    schema = module.CONFIG_SCHEMA
    if extra_schema:
        schema = dict(
            schema,
            properties={**schema["properties"], **extra_schema["properties"]},
            required=list(schema.get("required", [])) + extra_schema["required"],
        )
    problems = schema_problems(data, schema, prefix)
    source_data = {k: v for k, v in data.items() if not extra_schema or k not in ANNOUNCE_KEYS}
    # Source modules name their keys "data.<key>": say where the key really is.
    problems += [
        prefix + p[len("data") :] if p.startswith("data.") else p
        for p in module.validate(source_data)
    ]
    return problems, module


def _sources_problems(sources, sensor):
    """Problems of the ``[sources.<name>]`` tables: each table, then uniqueness across them."""
    announce_schema = {
        "properties": {k: SENSOR_SCHEMA["properties"][k] for k in ANNOUNCE_KEYS},
        "required": ["event_name", "payload_key"],
    }
    problems = []
    if not sources:
        return ["sources: expected at least one [sources.<name>] table, found none"]
    seen = {"event_name": {}, "payload_key": {}}
    for name, table in sources.items():
        prefix = "sources.%s" % name
        if not SOURCE_NAME_RE.match(name):
            problems.append(
                "%s: a source name is %s, found %r" % (prefix, SOURCE_NAME_EXPECTED, name)
            )
        elif name == DEFAULT_SOURCE:
            # Its state object would be the single-source form's <branch>.json.
            problems.append(
                "%s: 'default' names the single [data] source; choose another name" % prefix
            )
        if not isinstance(table, dict):
            problems.append("%s: expected a table, found %s" % (prefix, _found(table)))
            continue
        table_problems, _module = _data_problems(table, prefix, announce_schema)
        problems += table_problems
        payload_key = table.get("payload_key")
        if isinstance(payload_key, str):
            problems += [
                p.replace("sensor.payload_key", prefix + ".payload_key", 1)
                for p in payload_key_problems(payload_key)
            ]
        for key in seen:
            value = table.get(key)
            if isinstance(value, str):
                if value in seen[key]:
                    problems.append(
                        "%s.%s: %r is also the %s of source %r; each source needs its own"
                        % (prefix, key, value, key, seen[key][value])
                    )
                else:
                    seen[key][value] = name
    if isinstance(sensor, dict):
        for key in GLOBAL_ONLY_KEYS:
            if key in sensor:
                problems.append(
                    "sensor.%s: with [sources.<name>] tables each source sets its own %s; "
                    "move it into each [sources.<name>] table" % (key, key)
                )
    return problems


def validate_flowconfig(raw):
    """Validate a parsed ``flowconfig.toml`` and fill in defaults.

    The file names its sources one of two ways: one ``[data]`` table with ``[sensor]``'s
    ``event_name`` and ``payload_key`` (the single-source form), or ``[sources.<name>]``
    tables, each with its source keys and its own ``event_name``, ``payload_key`` and
    optionally ``settle_checks`` and ``on_first_check`` (defaults from ``[sensor]``).

    Parameters
    ----------
    raw : dict
        The TOML document as a dict.

    Returns
    -------
    dict
        The validated configuration, with defaults filled in and source-specific values
        resolved (see each source's ``normalize``). ``configured_sources`` lists its sources.

    Raises
    ------
    FlowConfigError
        Listing every problem found.
    """
    problems = schema_problems(raw, TOP_SCHEMA, "")
    multi = "sources" in raw
    if multi and "data" in raw:
        problems.append(
            "data: a file has either one [data] table or [sources.<name>] tables, not both; "
            "move [data] into a [sources.<name>] table"
        )
    elif not multi and "data" not in raw:
        problems.append("data: missing; this key is required")
    sensor = raw.get("sensor")
    if isinstance(sensor, dict):
        sensor_schema = SENSOR_SCHEMA
        if multi:
            sensor_schema = dict(SENSOR_SCHEMA, required=["cron_schedule"])
        problems += [
            p
            for p in schema_problems(sensor, sensor_schema, "sensor")
            if not (multi and p.startswith(tuple("sensor.%s:" % k for k in GLOBAL_ONLY_KEYS)))
        ]
        cron = sensor.get("cron_schedule")
        if isinstance(cron, str):
            problems += cron_problems(cron)
        payload_key = sensor.get("payload_key")
        if isinstance(payload_key, str) and not multi:
            problems += payload_key_problems(payload_key)
    trigger = raw.get("trigger")
    if isinstance(trigger, dict):
        problems += schema_problems(trigger, TRIGGER_SCHEMA, "trigger")

    data = raw.get("data")
    source = None
    if multi:
        if isinstance(raw["sources"], dict):
            problems += _sources_problems(raw["sources"], sensor)
    elif isinstance(data, dict):
        data_problems, source = _data_problems(data, "data")
        problems += data_problems
    if problems:
        raise FlowConfigError(sorted(set(problems)))

    config = dict(raw)
    config["sensor"] = {**SENSOR_DEFAULTS, **sensor}
    config["trigger"] = dict(raw.get("trigger", {}))
    if multi:
        config["sources"] = {}
        for name, table in raw["sources"].items():
            data = {k: v for k, v in table.items() if k not in ANNOUNCE_KEYS}
            module = load_source(data["type"])
            announce = {k: table[k] for k in ANNOUNCE_KEYS if k in table}
            config["sources"][name] = {**module.normalize(data), **announce}
    else:
        config["data"] = source.normalize(dict(data))
    return config


def config_file_in_argv(argv=None):
    """The file a flow run was given with ``--config flowconfig PATH``, or None.

    Metaflow hands the parser of a ``Config`` the file's text only; this names the file in
    the error's headline (``Invalid bad1.toml``) rather than ``flowconfig.toml``.
    """
    argv = sys.argv if argv is None else argv
    for i, arg in enumerate(argv[:-2]):
        if arg == "--config" and argv[i + 1] == "flowconfig":
            return argv[i + 2]
    return None


def parse_flowconfig(text, path=None):
    """Parser of ``BaseFlow.flowconfig``: TOML text in, validated dict out.

    Parameters
    ----------
    text : str
        Content of ``flowconfig.toml`` (or the file given with ``--config flowconfig PATH``).
    path : str, optional
        The file the text was read from, named in the error's headline; by default the one
        of ``--config flowconfig PATH`` on the command line, else ``flowconfig.toml``.

    Returns
    -------
    dict
        The validated configuration.

    Raises
    ------
    FlowConfigError
        ``Invalid <path>``, listing every problem found.
    """
    path = path or config_file_in_argv()
    try:
        raw = tomllib.loads(text)
        return validate_flowconfig(raw)
    except tomllib.TOMLDecodeError as e:
        raise FlowConfigError(["(file): not valid TOML: %s" % e], path=path) from None
    except FlowConfigError as e:
        if path is None:
            raise
        raise FlowConfigError(e.problems, path=path) from None


def load_flowconfig(path):
    """Read and validate a ``flowconfig.toml`` file outside a flow (tests, tools, deploy).

    Parameters
    ----------
    path : str or os.PathLike
        Path of the file.

    Returns
    -------
    dict
        The validated configuration.
    """
    with open(path, encoding="utf-8") as f:
        return parse_flowconfig(f.read(), path=os.fspath(path))
