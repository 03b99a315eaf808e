"""Load and validate ``flowconfig.toml``.

``parse_flowconfig`` is the parser of ``BaseFlow.flowconfig``: Metaflow calls it when the flow
is loaded, before any step runs, so a bad file stops the flow before it touches a data source
or publishes anything. Every problem in the file is reported at once, one line each, naming the
key, what was expected and what was found.
"""

import difflib
import sys

from .events import PUBLISH_TIMEOUT
from .exceptions import FlowConfigError
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

TOP_SCHEMA = {
    "type": "object",
    "properties": {
        "project_name": {
            "type": "string",
            "pattern": "^[a-z0-9_]+$",
            "x-expected": "lowercase letters, digits and underscores (a Metaflow @project name)",
        },
        "data": {"type": "object"},
        "sensor": {"type": "object"},
        "trigger": {"type": "object"},
    },
    "required": ["project_name", "data", "sensor"],
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
            "pattern": "^[A-Za-z_][A-Za-z0-9_]*$",
            "x-expected": "a Python identifier (it becomes a Parameter of the triggered flow)",
        },
        "settle_checks": {"type": "integer", "minimum": 0, "maximum": 1000},
        "namespaced_events": {"type": "boolean"},
        "history_size": {"type": "integer", "minimum": 1, "maximum": 1000},
        "card": {"type": "boolean"},
        "on_first_check": {"enum": ["publish", "accept"]},
        "publish_timeout": {"type": "integer", "minimum": 1, "maximum": 600},
    },
    "required": ["cron_schedule", "event_name", "payload_key"],
    "additionalProperties": False,
}

SENSOR_DEFAULTS = {
    "settle_checks": 0,
    "namespaced_events": True,
    "history_size": 50,
    "card": True,
    "on_first_check": "publish",
    "publish_timeout": PUBLISH_TIMEOUT,
}

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
    return "%s %r" % (_toml_type(value), value)


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
    from jsonschema import Draft202012Validator

    problems = []
    for error in Draft202012Validator(schema).iter_errors(instance):
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
            expected = _JSON_TYPE_NAMES.get(error.validator_value, error.validator_value)
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
        elif error.validator == "minItems":
            problems.append("%s: expected a non-empty list, found []" % key)
        else:
            problems.append("%s: %s" % (key, error.message))
    return sorted(set(problems))


def cron_problems(expression, key="sensor.cron_schedule"):
    """Check a 5-field cron expression (minute hour day-of-month month day-of-week).

    Argo Workflows' CronWorkflow takes exactly these five fields; a 6-field AWS-style
    expression (``0 10 * * ? *``) deploys but never fires, so it is rejected here.
    """
    from croniter import croniter

    fields = expression.split()
    if len(fields) != 5:
        return [
            "%s: expected a 5-field cron expression (minute hour day month weekday), "
            "found %r with %d field(s)" % (key, expression, len(fields))
        ]
    if not croniter.is_valid(expression):
        return ["%s: expected a valid 5-field cron expression, found %r" % (key, expression)]
    return []


def validate_flowconfig(raw):
    """Validate a parsed ``flowconfig.toml`` and fill in defaults.

    Parameters
    ----------
    raw : dict
        The TOML document as a dict.

    Returns
    -------
    dict
        The validated configuration, with defaults filled in and source-specific values
        resolved (see each source's ``normalize``).

    Raises
    ------
    FlowConfigError
        Listing every problem found.
    """
    problems = schema_problems(raw, TOP_SCHEMA, "")
    sensor = raw.get("sensor")
    if isinstance(sensor, dict):
        problems += schema_problems(sensor, SENSOR_SCHEMA, "sensor")
        cron = sensor.get("cron_schedule")
        if isinstance(cron, str):
            problems += cron_problems(cron)
        payload_key = sensor.get("payload_key")
        if isinstance(payload_key, str) and payload_key in RESERVED_PAYLOAD_KEYS:
            problems.append(
                "sensor.payload_key: %r is set by the sensor itself; choose another name, "
                "e.g. 'value'" % payload_key
            )
    trigger = raw.get("trigger")
    if isinstance(trigger, dict):
        problems += schema_problems(trigger, TRIGGER_SCHEMA, "trigger")

    data = raw.get("data")
    source = None
    if isinstance(data, dict):
        type_problems = schema_problems(data, DATA_TYPE_SCHEMA, "data")
        if type_problems:
            problems += type_problems
        else:
            source = load_source(data["type"])
            problems += schema_problems(data, source.CONFIG_SCHEMA, "data")
            problems += source.validate(data)
    if problems:
        raise FlowConfigError(sorted(set(problems)))

    config = dict(raw)
    config["sensor"] = {**SENSOR_DEFAULTS, **sensor}
    config["trigger"] = dict(raw.get("trigger", {}))
    config["data"] = source.normalize(dict(data))
    return config


def parse_flowconfig(text):
    """Parser of ``BaseFlow.flowconfig``: TOML text in, validated dict out.

    Parameters
    ----------
    text : str
        Content of ``flowconfig.toml`` (or the file given with ``--config flowconfig PATH``).

    Returns
    -------
    dict
        The validated configuration.
    """
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise FlowConfigError(["(file): not valid TOML: %s" % e]) from None
    return validate_flowconfig(raw)


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
        return parse_flowconfig(f.read())
