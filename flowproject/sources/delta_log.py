"""The fields of a Delta log the ``delta`` source uses, each checked for type and range.

A log is written by many libraries (Spark, delta-rs, Flink, ...) and read here without any of
them, so nothing read from it is trusted: a field the value depends on that is missing or of
the wrong type is a ``LogFormatError`` naming the field (the source turns it into a
``SourceError`` naming the file); a field only shown on the card that is malformed is ignored.

Used for the value, so checked (a ``LogFormatError`` when malformed):

- each non-empty line: a JSON object (one action);
- ``metaData``: an object, its ``id`` a non-empty string without control characters (the
  table's id, part of the value);
- ``add``, ``remove``, ``cdc``: objects, their ``dataChange`` a boolean (whether the commit
  changed data; the protocol requires it on ``add`` and ``remove``, and a missing one cannot
  be told from either value).

Ignored when malformed, with the reason:

- ``commitInfo`` and its ``operation`` / ``timestamp``: free-form provenance by the protocol,
  shown on the card only. A timestamp that is not an integer number of milliseconds between
  1970 and 9999 (a writer that stored microseconds, say) is unknown;
- ``add.stats`` (``numRecords``): optional statistics, the card's "rows added" only;
- any other action (``protocol``, ``txn``, ``domainMetadata``, actions of later protocol
  versions): the value does not depend on it;
- ``_last_checkpoint``: a hint where to start listing; when its ``version`` is not a
  non-negative integer the log is listed from its start instead.

The checks are plain ``isinstance`` tests (no schema library): they run on every commit of
every check.
"""

import json

from ..schema_check import is_integer, json_type

# Versions are 20 digits in the log's file names.
MAX_VERSION = 10**20 - 1

# 9999-12-31T23:59:59.999Z in milliseconds: the last instant a datetime can show.
MAX_TIMESTAMP_MS = 253402300799999

# Longer operation names are cut for the card (a commitInfo is free-form).
MAX_OPERATION = 100

MAX_TABLE_ID = 256


class LogFormatError(ValueError):
    """A field of a log file has the wrong type or range.

    Parameters
    ----------
    field : str
        Where in the file, e.g. ``line 3: metaData.id``.
    problem : str
        What is wrong, e.g. ``expected a string, found a list``.
    """

    def __init__(self, field, problem):
        super().__init__("%s: %s" % (field, problem))
        self.field = field
        self.problem = problem


# ``json_type`` names as these messages say them.
_TYPE_NAMES = {
    "boolean": "a boolean",
    "integer": "a number",
    "number": "a number",
    "string": "a string",
    "array": "a list",
    "object": "an object",
}


def type_name(value):
    """The JSON name of ``value``'s type, for messages."""
    found = json_type(value)
    return _TYPE_NAMES.get(found, found)


is_int = is_integer


def decode(body):
    """The text of a log file, or a ``LogFormatError`` when it is not UTF-8."""
    try:
        return body.decode("utf-8")
    except UnicodeDecodeError as e:
        raise LogFormatError("file", "not UTF-8 text (byte %d)" % e.start) from None


def actions(text):
    """Yield ``(line number, action)`` for each non-empty line of a newline-delimited JSON
    log file; each action is a dict."""
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            action = json.loads(line)
        except (ValueError, RecursionError) as e:
            raise LogFormatError("line %d" % number, "not JSON (%s)" % _short(e)) from None
        if not isinstance(action, dict):
            raise LogFormatError(
                "line %d" % number, "expected a JSON object, found %s" % type_name(action)
            )
        yield number, action


def _short(error):
    text = str(error) or error.__class__.__name__
    return text if len(text) <= 120 else text[:117] + "..."


def table_id(metadata, where):
    """``metaData.id``, checked: a non-empty string of printable characters."""
    if not isinstance(metadata, dict):
        raise LogFormatError(where, "expected an object, found %s" % type_name(metadata))
    found = metadata.get("id")
    if not isinstance(found, str) or not found:
        raise LogFormatError(
            where + ".id",
            "expected the table's id (a non-empty string), found %s"
            % ("an empty string" if found == "" else type_name(found)),
        )
    if len(found) > MAX_TABLE_ID or not found.isprintable():
        raise LogFormatError(
            where + ".id",
            "expected the table's id, found %d unprintable or too many characters" % len(found),
        )
    return found


def timestamp(value):
    """A commit's time in milliseconds, or None when it is not a plausible one."""
    if is_int(value) and 0 <= value <= MAX_TIMESTAMP_MS:
        return value
    return None


def _operation(value):
    if not isinstance(value, str) or not value:
        return None
    return value if len(value) <= MAX_OPERATION else value[: MAX_OPERATION - 3] + "..."


def _records(add):
    """``numRecords`` of an ``add``'s stats, or None when they do not say."""
    stats = add.get("stats")
    if not isinstance(stats, str):
        return None
    try:
        parsed = json.loads(stats)
    except (ValueError, RecursionError):
        return None
    records = parsed.get("numRecords") if isinstance(parsed, dict) else None
    return records if is_int(records) and records >= 0 else None


def summarize_commit(version, text):
    """What one commit file (newline-delimited JSON actions) says, for the value and the card.

    Parameters
    ----------
    version : int
        The commit's version (from its file name).
    text : str
        The file's text.

    Returns
    -------
    dict
        ``version``, ``data_change`` (an ``add``/``remove``/``cdc`` with ``dataChange:
        true``), ``operation``, ``timestamp`` (ms, None when unknown), ``rows_added`` (when
        the log says) and ``table_id`` (when the commit has ``metaData``).

    Raises
    ------
    LogFormatError
        A line or a field the value depends on is malformed.
    """
    found = {"version": version, "data_change": False, "operation": None, "timestamp": None}
    rows = None
    for number, action in actions(text):
        info = action.get("commitInfo")
        if isinstance(info, dict):  # else ignored: free-form provenance (see the docstring)
            found["operation"] = _operation(info.get("operation"))
            found["timestamp"] = timestamp(info.get("timestamp"))
        if "metaData" in action:
            found["table_id"] = table_id(action["metaData"], "line %d: metaData" % number)
        for kind in ("add", "remove", "cdc"):
            if kind not in action:
                continue
            file_action = action[kind]
            where = "line %d: %s" % (number, kind)
            if not isinstance(file_action, dict):
                raise LogFormatError(where, "expected an object, found %s" % type_name(file_action))
            change = file_action.get("dataChange")
            if not isinstance(change, bool):
                raise LogFormatError(
                    where + ".dataChange",
                    "expected true or false, found %s"
                    % ("nothing" if "dataChange" not in file_action else type_name(change)),
                )
            if change:
                found["data_change"] = True
                if kind == "add":
                    records = _records(file_action)
                    if records is not None:
                        rows = (rows or 0) + records
    if rows is not None:
        found["rows_added"] = rows
    return found


def last_checkpoint_version(text):
    """The ``version`` of a ``_last_checkpoint`` file, or None when it does not hold a
    plausible one (the log is then listed from its start: the file is only a hint)."""
    try:
        parsed = json.loads(text)
    except (ValueError, RecursionError):
        return None
    version = parsed.get("version") if isinstance(parsed, dict) else None
    if is_int(version) and 0 <= version <= MAX_VERSION:
        return version
    return None


def checkpoint_table_id_json(text):
    """``metaData.id`` of a V2 checkpoint's JSON file, or None when it has no ``metaData``."""
    for number, action in actions(text):
        if action.get("metaData") is not None:
            return table_id(action["metaData"], "line %d: metaData" % number)
    return None


def checkpoint_table_id_parquet(body):
    """``metaData.id`` of a parquet checkpoint (one part of it), or None when the part has
    no ``metaData`` row."""
    import io

    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(io.BytesIO(body), columns=["metaData"])
        rows = table.column("metaData").to_pylist()
    except (pa.ArrowException, KeyError, ValueError, OSError) as e:
        raise LogFormatError(
            "file", "not a parquet checkpoint with metaData (%s)" % _short(e)
        ) from None
    for number, row in enumerate(rows):
        # Rows of other actions hold a null metaData (or, from some writers, all-null fields).
        if row is not None and not (isinstance(row, dict) and all(v is None for v in row.values())):
            return table_id(row, "row %d: metaData" % number)
    return None
