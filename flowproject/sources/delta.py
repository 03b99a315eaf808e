"""Delta Lake source: watch a table on S3 through its transaction log, ``_delta_log/``.

The value is the table's latest committed version that changed data, with the table's id:
``"<version>@<table id>"`` (the event payload also carries ``table_version``, ``table_id`` and
``latest_version`` on their own; read the data with ``DeltaTable(uri, version=N)``). A commit
changes data when one of its ``add``, ``remove`` or ``cdc`` actions has ``dataChange: true``:
an append, overwrite, delete, merge or restore does; OPTIMIZE, Z-order and other
compactions (``dataChange: false``) do not, and neither does a commit without such actions
(a schema or property change, a ``SET TBLPROPERTIES``): the data a pinned version reads is
the same. A re-created table (another ``metaData.id``; its versions restart at 0) changes
the value. A table with no commit is the absent state.

The log is read with boto3 directly (the ``deltalake`` library is not needed to watch a
table). Each check continues from a cursor, the last version read, kept in the sensor state
apart from the announced version, so a check of an unchanged table is one ListObjectsV2 call
with ``StartAfter``, whatever the table's history. Without a cursor (the first check), the
check reads ``_last_checkpoint`` and the commits after that checkpoint, then walks back
through older commits to the latest one that changed data. Files of the log other than
commits and checkpoints (``.crc``, ``*.compacted.json``, ``_sidecars/``, ``_staged_commits/``)
are ignored.

Credentials and endpoint follow the S3 source: the standard AWS chain, ``role`` assumed on
top, ``AWS_ENDPOINT_URL_S3`` / ``AWS_ENDPOINT_URL`` / ``METAFLOW_S3_ENDPOINT_URL``.
"""

import json
import re
import time
from contextlib import contextmanager

from ..exceptions import SourceError
from . import s3
from .observation import Observation

TYPE = "delta"

# Reading the log needs boto3 only; the checkpoint's table id, on a first check, pyarrow.
PACKAGES = {"boto3": ">=1.34", "pyarrow": ">=14"}

# The flow reads the state's cursor before checking (see flowproject.sources).
USES_CURSOR = True

CONFIG_SCHEMA = {
    "type": "object",
    "properties": {
        "type": {"const": "delta"},
        "uri": {
            "type": "string",
            "pattern": "^s3a?://[a-z0-9][a-z0-9.-]{1,61}[a-z0-9](/.*)?$",
            "x-expected": "'s3://<bucket>/<path to the table>'",
        },
        "role": s3.CONFIG_SCHEMA["properties"]["role"],
    },
    "required": ["type", "uri"],
    "additionalProperties": False,
}

LOG_FOLDER = "_delta_log/"

# Keys of the log, relative to ``_delta_log/``.
COMMIT_RE = re.compile(r"^(\d{20})\.json$")
CHECKPOINT_RE = re.compile(r"^(\d{20})\.checkpoint(\.\d{10}\.\d{10}|\.[^.]+)?\.(parquet|json)$")

# A first check walks back at most this many commits before the checkpoint for the latest
# one that changed data; beyond it (or when older commits were cleaned up) the checkpoint's
# version stands for the data.
MAX_WALK_BACK = 100

# Commits kept in the cursor (newest last) for the card's "commits since the announcement".
COMMITS_KEPT = 50


def validate(data):
    """Checks beyond the schema: S3's bucket naming rules, a path to a table."""
    uri = data.get("uri")
    if not isinstance(uri, str) or not re.match(CONFIG_SCHEMA["properties"]["uri"]["pattern"], uri):
        return []
    bucket, key = _split(uri)
    problems = [p.replace("data.bucket:", "data.uri:", 1) for p in s3.bucket_name_problems(bucket)]
    if not key:
        problems.append(
            "data.uri: expected the path of the table inside the bucket "
            "('s3://bucket/path/to/table'), found %r" % uri
        )
    elif "/_delta_log" in "/" + key:
        problems.append(
            "data.uri: expected the table's folder, not its log; found %r (drop '_delta_log')" % uri
        )
    return problems


def _split(uri):
    rest = uri.split("://", 1)[1]
    bucket, _, key = rest.partition("/")
    return "s3://" + bucket, key.strip("/")


def normalize(data):
    """``bucket`` (name) and ``key`` (the table's folder, ending in '/') from ``uri``."""
    data = dict(data)
    bucket, key = _split(data["uri"])
    data["uri"] = "s3://%s/%s" % (bucket[len("s3://") :], key)
    data["bucket"] = bucket[len("s3://") :]
    data["key"] = key + "/"
    return data


def describe(data):
    """``delta table s3://bucket/path``: what this sensor watches."""
    return "delta table %s" % data["uri"]


def identity(data, env=None):
    """What the value depends on: the endpoint's host and the table's location."""
    return {
        "type": TYPE,
        "endpoint": s3.endpoint_host(env),
        "bucket": data["bucket"],
        "key": data["key"],
    }


def absent_message(data):
    """What an absent observation means, for people."""
    return "no Delta table at %s (no commit under %s)" % (data["uri"], LOG_FOLDER)


@contextmanager
def open_session(data):
    """An S3 session (``s3.S3Session``) for the table's bucket."""
    with s3.open_session(dict(data, list_concurrency=1)) as session:
        yield session


# --------------------------------------------------------------------------------------
# Reading the log
# --------------------------------------------------------------------------------------


def _log_prefix(data):
    return data["key"] + LOG_FOLDER


def _list_log(session, data, start_after=None):
    """``(commits, checkpoints)`` of the log after ``start_after`` (a key relative to the log):
    ``{version: etag}`` and ``{version: [relative keys]}``. Other files are ignored."""
    prefix = _log_prefix(data)
    started = time.monotonic()
    commits, checkpoints, pages = {}, {}, 0
    start = prefix + start_after if start_after else None
    # The delimiter folds _sidecars/ and _staged_commits/ into one entry each.
    for page in s3._pages(session, data, prefix, delimiter="/", start_after=start):
        pages += 1
        for obj in page.get("Contents", ()):
            name = obj["Key"][len(prefix) :]
            match = COMMIT_RE.match(name)
            if match:
                commits[int(match.group(1))] = obj.get("ETag", "").strip('"')
                continue
            match = CHECKPOINT_RE.match(name)
            if match:
                checkpoints.setdefault(int(match.group(1)), []).append(name)
    session.record("ListObjectsV2", time.monotonic() - started, pages=pages, log=True)
    return commits, checkpoints


def _get(session, data, name):
    """The bytes of ``_delta_log/<name>``, or None when it does not exist."""
    from botocore.exceptions import BotoCoreError, ClientError

    key = _log_prefix(data) + name
    started = time.monotonic()
    try:
        body = session.client.get_object(Bucket=data["bucket"], Key=key)["Body"].read()
    except ClientError as e:
        if s3._error_code(e) in ("NoSuchKey", "404", "NotFound"):
            session.record("GetObject", time.monotonic() - started, key=name, found=False)
            return None
        s3._raise_for(e, data, "reading %s" % key)
    except BotoCoreError as e:
        raise SourceError(
            "Could not reach S3 for s3://%s/%s: %s" % (data["bucket"], key, e)
        ) from None
    session.record("GetObject", time.monotonic() - started, key=name, found=True)
    return body


def commit_name(version):
    return "%020d.json" % version


def read_commit(session, data, version):
    """The summary of commit ``version``, or None when its file does not exist (cleaned up)."""
    body = _get(session, data, commit_name(version))
    if body is None:
        return None
    try:
        return summarize_commit(version, body.decode("utf-8"))
    except ValueError as e:
        raise SourceError(
            "Could not read %s%s: not a Delta commit (%s)"
            % (_log_prefix(data), commit_name(version), e)
        ) from None


def summarize_commit(version, text):
    """What one commit file (newline-delimited JSON actions) says, for the value and the card.

    Returns
    -------
    dict
        ``version``, ``data_change`` (an ``add``/``remove``/``cdc`` with ``dataChange: true``),
        ``operation``, ``timestamp`` (ms), ``rows_added`` (when the log says) and
        ``table_id`` (when the commit has ``metaData``).
    """
    found = {"version": version, "data_change": False, "operation": None, "timestamp": None}
    rows = None
    for line in text.splitlines():
        if not line.strip():
            continue
        action = json.loads(line)
        if not isinstance(action, dict):
            raise ValueError("line is not a JSON object")
        if "commitInfo" in action:
            info = action["commitInfo"] or {}
            found["operation"] = info.get("operation")
            found["timestamp"] = info.get("timestamp")
        if "metaData" in action:
            found["table_id"] = (action["metaData"] or {}).get("id")
        for kind in ("add", "remove", "cdc"):
            if kind in action and (action[kind] or {}).get("dataChange"):
                found["data_change"] = True
                if kind == "add":
                    records = _records(action[kind])
                    if records is not None:
                        rows = (rows or 0) + records
    if rows is not None:
        found["rows_added"] = rows
    return found


def _records(add):
    try:
        return int(json.loads(add.get("stats") or "{}").get("numRecords"))
    except (TypeError, ValueError):
        return None


def checkpoint_table_id(session, data, names):
    """``metaData.id`` from a checkpoint's files (parquet, or a V2 checkpoint's JSON)."""
    for name in sorted(names):
        body = _get(session, data, name)
        if body is None:
            continue
        if name.endswith(".json"):
            for line in body.decode("utf-8").splitlines():
                action = json.loads(line) if line.strip() else {}
                if action.get("metaData"):
                    return action["metaData"].get("id")
            continue
        import io

        import pyarrow.parquet as pq

        table = pq.read_table(io.BytesIO(body), columns=["metaData"])
        for row in table.column("metaData").to_pylist():
            if row and row.get("id"):
                return row["id"]
    return None


def _last_checkpoint(session, data):
    body = _get(session, data, "_last_checkpoint")
    if body is None:
        return None
    try:
        return int(json.loads(body.decode("utf-8"))["version"])
    except (ValueError, KeyError, TypeError):
        return None  # unreadable: list the log from its start instead


def full_read(session, data):
    """Read the log without a cursor: ``(latest commits, table id, data commit, etag)``.

    ``_last_checkpoint`` points at the newest checkpoint; the commits after it are read,
    then older commits backwards until one changed data.
    """
    checkpoint = _last_checkpoint(session, data)
    start = "%020d" % checkpoint if checkpoint is not None else None
    commits, checkpoints = _list_log(session, data, start)
    if checkpoint is not None and not commits and not checkpoints:
        # A _last_checkpoint left behind by a deleted table; nothing is committed.
        return [], None, None, None
    if checkpoint is None and checkpoints:
        checkpoint = max(checkpoints)  # _last_checkpoint missing: the newest one listed
    if not commits and checkpoint is None:
        return [], None, None, None
    after = checkpoint if checkpoint is not None else -1
    read = [c for c in (read_commit(session, data, v) for v in sorted(commits) if v > after) if c]
    latest = max([after] + [c["version"] for c in read])
    table_id = next((c["table_id"] for c in reversed(read) if c.get("table_id")), None)
    if table_id is None and checkpoint is not None:
        table_id = checkpoint_table_id(session, data, checkpoints.get(checkpoint, []))
    data_commit = next((c for c in reversed(read) if c["data_change"]), None)
    if data_commit is None and checkpoint is not None:
        for version in range(checkpoint, max(-1, checkpoint - MAX_WALK_BACK), -1):
            commit = read_commit(session, data, version)
            if commit is None:
                break  # cleaned up by log retention
            read.insert(0, commit)
            if commit["data_change"]:
                data_commit = commit
                break
        if data_commit is None:
            # The history before the checkpoint is gone: its version stands for the data.
            data_commit = {"version": checkpoint, "data_change": True, "operation": "CHECKPOINT"}
    return read, table_id, data_commit, commits.get(latest)


def continue_read(session, data, cursor):
    """Read the commits after the cursor's version with one listing.

    Returns ``(new commits, etag of the newest)``, or None when the cursor's own commit is gone
    or was rewritten (a deleted or re-created table): the log must be read afresh.
    """
    version = cursor["version"]
    start = commit_name(version - 1) if version > 0 else None
    commits, _checkpoints = _list_log(session, data, start)
    if commits.get(version) is None or (cursor.get("etag") and commits[version] != cursor["etag"]):
        return None
    read = []
    for v in sorted(v for v in commits if v > version):
        commit = read_commit(session, data, v)
        if commit is None:
            return None  # listed, then gone: the table is being replaced; read it afresh
        read.append(commit)
    latest = max(commits)
    return read, commits[latest]


def _valid_cursor(cursor, data):
    return (
        isinstance(cursor, dict)
        and cursor.get("uri") == data["uri"]
        and isinstance(cursor.get("version"), int)
        and cursor.get("table_id")
        and isinstance(cursor.get("data_version"), int)
    )


def _commit_row(commit):
    row = {k: commit.get(k) for k in ("version", "operation", "timestamp", "data_change")}
    if "rows_added" in commit:
        row["rows_added"] = commit["rows_added"]
    return row


def check(data, session, cursor=None, baseline=None):
    """Check the table once, from ``cursor`` when it is one this source left.

    Parameters
    ----------
    data : dict
        The normalized ``[data]`` table.
    session : S3Session
        From ``open_session``.
    cursor : dict, optional
        The previous check's ``Observation.cursor``.

    Returns
    -------
    Observation
        ``value`` ``"<version>@<table id>"`` (None when the table has no commit); ``summary``
        with ``table_version``, ``table_id``, ``latest_version`` and the recent ``commits``;
        ``cursor`` for the next check.
    """
    continued = None
    if _valid_cursor(cursor, data):
        continued = continue_read(session, data, cursor)
    if continued is not None:
        new, etag = continued
        table_id, data_version = cursor["table_id"], cursor["data_version"]
        data_timestamp = cursor.get("data_timestamp")
        latest = max([cursor["version"]] + [c["version"] for c in new])
        commits = list(cursor.get("commits") or [])
        recreated = False
        for commit in new:
            if commit.get("table_id") and commit["table_id"] != table_id:
                table_id, recreated = commit["table_id"], True
            if commit["data_change"]:
                data_version, data_timestamp = commit["version"], commit.get("timestamp")
        if recreated and not any(c["data_change"] for c in new):
            data_version = latest  # a new table id with no data commit yet
        commits += [_commit_row(c) for c in new]
    else:
        read, table_id, data_commit, etag = full_read(session, data)
        if not read and data_commit is None:
            return Observation(
                None, {"state": "absent", "uri": data["uri"]}, cursor={"uri": data["uri"]}
            )
        latest = max([c["version"] for c in read] + [data_commit["version"]])
        data_version, data_timestamp = data_commit["version"], data_commit.get("timestamp")
        commits = [_commit_row(c) for c in read]
    commits = commits[-COMMITS_KEPT:]
    summary = {
        "state": "present",
        "uri": data["uri"],
        "table_version": data_version,
        "table_id": table_id,
        "latest_version": latest,
        "commits": commits,
        "payload": {
            "table_version": str(data_version),
            "table_id": table_id or "",
            "latest_version": str(latest),
        },
    }
    if data_timestamp is not None:
        summary["table_version_timestamp"] = data_timestamp
    next_cursor = {
        "uri": data["uri"],
        "version": latest,
        "etag": etag,
        "table_id": table_id,
        "data_version": data_version,
        "data_timestamp": data_timestamp,
        "commits": commits,
    }
    return Observation("%d@%s" % (data_version, table_id or "unknown"), summary, cursor=next_cursor)
