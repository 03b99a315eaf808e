"""Delta Lake source: watch a table on S3 through its transaction log, ``_delta_log/``.

The value is the table's latest committed version that changed data, with the table's id:
``"<version>@<table id>"`` (the event payload also carries ``table_version``, ``table_id`` and
``latest_version`` on their own; read the data with ``DeltaTable(uri, version=N)``). A commit
changes data when one of its ``add``, ``remove`` or ``cdc`` actions has ``dataChange: true``:
an append, overwrite, delete, merge or restore does; OPTIMIZE, Z-order and other
compactions (``dataChange: false``) do not, and neither does a commit without such actions
(a schema or property change, a ``SET TBLPROPERTIES``): the data a pinned version reads is
the same. A re-created table (another ``metaData.id``; its versions restart at 0) changes
the value.

A table with no commit is the absent state, and so is a table none of whose commits changed
data (``DeltaTable.create``, a ``CREATE TABLE`` before the first load): the value names data a
training flow can pin, and an empty table has none, so its creation is not an event; its
first append is announced as the table appearing (``summary["reason"]`` says it is empty).
A table emptied by a delete or an overwrite is not absent: that commit changed data.

The log is read with boto3 directly (the ``deltalake`` library is not needed to watch a
table). Each check continues from a cursor, the last version read, kept in the sensor state
apart from the announced version, so a check of an unchanged table is one ListObjectsV2 call
with ``StartAfter``, whatever the table's history. Without a cursor (the first check), the
check reads ``_last_checkpoint`` and the commits after that checkpoint, then walks back
through older commits to the latest one that changed data. Files of the log other than
commits and checkpoints (``.crc``, ``*.compacted.json``, ``_sidecars/``, ``_staged_commits/``)
are ignored.

Hostile or odd logs. Every field read is checked for type and range before use
(``delta_log``): a malformed field the value depends on is a ``SourceError`` naming the file
(``s3://bucket/key``) and the field; a malformed field shown only on the card (``commitInfo``,
``add.stats``, a timestamp out of range) is ignored. ``_last_checkpoint`` is a hint: when
its version is not a non-negative integer, or no checkpoint of that version is listed, the log
is listed from its start. An unreadable checkpoint (when its table id is needed) is a
``SourceError`` naming it.

Gaps. A version counts as read only once every lower one is: the cursor never moves past a
commit missing from a listing that shows later ones (an out-of-order or lagging listing).
The value is then that of the commits before the gap and ``summary["waiting_for"]`` names
the missing version; after ``GAP_CHECKS`` (3) checks in a row that see the same gap, counted in
the cursor, the check fails with a ``SourceError`` naming the missing commit file (until it
appears). A log with commits but neither commit 0 nor a checkpoint fails at once.

Backlogs. New commits are read by ``READ_CONCURRENCY`` threads (fewer when the run's bound
on threads sets ``data["list_concurrency"]``; twice as many requests in flight). A flow sets
``session.deadline`` (a ``time.monotonic()`` instant) before checking; reading stops
``DEADLINE_MARGIN`` before it, and the check then raises ``SourceIncomplete`` whose cursor is
the last version up to which every commit was read, so the next check continues from there
(the first ``READ_CONCURRENCY`` commits are read whatever the time: every check makes
progress). The value after any number of such checks is the value of one
uninterrupted read.

A cursor is a hint: losing it may cost reads, never change the value. Without a cursor, when
no commit after the newest checkpoint changed data, the check walks back from the
checkpoint (``MAX_WALK_BACK`` commits, or down to the baseline's version when that is within
``MAX_WALK_BACK_TO_BASELINE``). When the walk ends before a data-changing commit, because
older commits were cleaned up by log retention or at the limit, the data version is only
known to be at or before the newest version V not read. The baseline ``b@T`` (the value last
announced) is then the value exactly when it is proved: ``T`` is the table's id and
``V <= b <= latest`` (every commit after ``b`` was read and none changed data, so the data is
``b``'s). Otherwise the checkpoint's version stands for the data and ``summary["cannot_tell"]``
says why (the decision then follows ``on_first_check``); the cursor remembers it, so later
checks keep saying so while that value differs from the baseline. A walk that reaches version
0 without a data change is an empty table (absent).

Credentials and endpoint follow the S3 source: the standard AWS chain, ``role`` assumed on
top, ``AWS_ENDPOINT_URL_S3`` / ``AWS_ENDPOINT_URL`` / ``METAFLOW_S3_ENDPOINT_URL``.
"""

import re
import time
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from contextlib import contextmanager

from ..exceptions import SourceError, SourceIncomplete
from . import delta_log, s3
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
# version stands for the data unless the baseline is proved (see the module docstring).
MAX_WALK_BACK = 100

# ... or down to the baseline's version when that is at most this far back.
MAX_WALK_BACK_TO_BASELINE = 1000

# New commits are read by this many threads sharing the session's (thread-safe) client,
# twice as many requests in flight, so a backlog costs round trips / 16, not one per commit.
READ_CONCURRENCY = 16

# Reading stops this long before session.deadline, keeping the commits read in order: the
# SourceIncomplete (and its cursor) must reach the flow before the check is abandoned.
DEADLINE_MARGIN = 0.2

# A commit missing while later ones are listed is waited for on this many checks (the one
# that first sees it included): the cursor stays before it and the value is that of the
# commits before it; on the GAP_CHECKS-th check in a row it is a SourceError naming it.
GAP_CHECKS = 3

BASELINE_RE = re.compile(r"^(\d{1,20})@(.+)$")

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
    return "no Delta table at %s, or one without data (no commit under %s that changed data)" % (
        data["uri"],
        LOG_FOLDER,
    )


@contextmanager
def open_session(data):
    """An S3 session (``s3.S3Session``) for the table's bucket, with a connection for each
    reading thread and ``deadline`` None (a flow sets it before checking)."""
    with s3.open_session(dict(data, list_concurrency=READ_CONCURRENCY)) as session:
        session.deadline = None
        yield session


# --------------------------------------------------------------------------------------
# Reading the log
# --------------------------------------------------------------------------------------


def _log_prefix(data):
    return data["key"] + LOG_FOLDER


def _where(data, name):
    """``s3://bucket/path/_delta_log/<name>``: a log file, for messages."""
    return "s3://%s/%s%s" % (data["bucket"], _log_prefix(data), name)


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
                commits[int(match.group(1))] = str(obj.get("ETag", "")).strip('"')
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
    """The summary of commit ``version`` (``delta_log.summarize_commit``), or None when its file
    does not exist (cleaned up). A malformed commit is a ``SourceError`` naming file and field."""
    body = _get(session, data, commit_name(version))
    if body is None:
        return None
    try:
        return delta_log.summarize_commit(version, delta_log.decode(body))
    except delta_log.LogFormatError as e:
        raise SourceError(
            "Could not read the Delta commit %s: %s" % (_where(data, commit_name(version)), e)
        ) from None


def checkpoint_table_id(session, data, names):
    """``metaData.id`` from a checkpoint's files (parquet, or a V2 checkpoint's JSON); None
    when none of them holds it. A malformed file is a ``SourceError`` naming it."""
    for name in sorted(names):
        body = _get(session, data, name)
        if body is None:
            continue
        try:
            if name.endswith(".json"):
                found = delta_log.checkpoint_table_id_json(delta_log.decode(body))
            else:
                found = delta_log.checkpoint_table_id_parquet(body)
        except delta_log.LogFormatError as e:
            raise SourceError(
                "Could not read the Delta checkpoint %s: %s" % (_where(data, name), e)
            ) from None
        if found is not None:
            return found
    return None


def _last_checkpoint(session, data):
    """``_last_checkpoint``'s version, or None when the file is missing or implausible (it is
    a hint: the log is then listed from its start)."""
    body = _get(session, data, "_last_checkpoint")
    if body is None:
        return None
    try:
        return delta_log.last_checkpoint_version(body.decode("utf-8"))
    except UnicodeDecodeError:
        return None


def _read_commits(session, data, versions, deadline, first=None, stop=None, read=None):
    """Read the commits ``versions`` (in that order) by up to ``READ_CONCURRENCY`` threads
    sharing the session's client, ``2 * READ_CONCURRENCY`` requests in flight.

    Parameters
    ----------
    versions : list of int
    deadline : float or None
        A ``time.monotonic()`` instant: reading stops ``DEADLINE_MARGIN`` before it, keeping
        the commits read in order. The first ``READ_CONCURRENCY`` (or ``first``) are read
        whatever the time, so every check makes progress.
    first : int, optional
        Requests in flight at first, doubling with each commit read (1 for a walk back, which
        usually stops at its first commit); ``2 * READ_CONCURRENCY`` by default.
    stop : callable, optional
        ``stop(summary)`` true ends the read after that commit.
    read : callable, optional
        ``read(session, data, version)``: what is kept of each commit, None when it does not
        exist; ``read_commit`` (its summary) by default.

    Returns
    -------
    tuple
        ``(summaries, complete)``: the summaries of a prefix of ``versions``, in order, the
        last None when that commit does not exist (reading stops there); ``complete`` False
        when time ran short before the end.
    """
    results = []
    if not versions:
        return results, True
    read = read or read_commit
    # ``list_concurrency``, when the run's bound on threads sets it, caps the readers.
    workers = min(READ_CONCURRENCY, data.get("list_concurrency") or READ_CONCURRENCY)
    workers = max(1, min(workers, len(versions)))
    most = 2 * workers
    window = min(most, first) if first else most
    guaranteed = min(len(versions), first or workers)
    pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="delta-log")
    pending, submitted = {}, 0
    try:
        while len(results) < len(versions):
            late = deadline is not None and time.monotonic() > deadline - DEADLINE_MARGIN
            while submitted < len(versions) and len(pending) < window:
                if late and submitted >= guaranteed:
                    break
                pending[submitted] = pool.submit(read, session, data, versions[submitted])
                submitted += 1
            head = pending.pop(len(results), None)
            if head is None:
                return results, False  # out of time before it was asked for
            timeout = None
            if deadline is not None and len(results) >= guaranteed:
                timeout = deadline - DEADLINE_MARGIN - time.monotonic()
                if timeout <= 0:
                    return results, False
            try:
                summary = head.result(timeout=timeout)  # a SourceError of the earliest first
            except FutureTimeout:
                return results, False
            results.append(summary)
            if summary is None or (stop is not None and stop(summary)):
                return results, True
            window = min(most, window * 2)
        return results, True
    finally:
        pool.shutdown(wait=False, cancel_futures=True)


def read_each_commit(session, data, versions, read):
    """``read(session, data, version)`` for each of ``versions``, in order, read as a check
    reads the log (``READ_CONCURRENCY`` threads) but with no deadline; the list ends with the
    first None (a commit that does not exist)."""
    results, _ = _read_commits(session, data, versions, None, read=read)
    return results


def _contiguous(commits, after):
    """``(end, missing)``: the last version of the unbroken run of listed commits after
    ``after``, and the first version missing before a later listed one (None without a gap)."""
    end = after
    while end + 1 in commits:
        end += 1
    missing = end + 1 if any(v > end for v in commits) else None
    return end, missing


def _commit_row(commit):
    row = {k: commit.get(k) for k in ("version", "operation", "timestamp", "data_change")}
    if "rows_added" in commit:
        row["rows_added"] = commit["rows_added"]
    return row


class _Log(object):
    """What has been read of a table's log, in version order: the cursor's fields.

    ``data_version`` None is a table without data (or, while ``resolved`` is False, a data
    version still to find at or before a checkpoint); ``stand_in`` is the reason when the
    checkpoint's version stands for a data version the log can no longer tell.
    """

    def __init__(self, version, table_id=None, data_version=None, resolved=True):
        self.version = version
        self.etag = None
        self.table_id = table_id
        self.data_version = data_version
        self.data_timestamp = None
        self.resolved = resolved
        self.stand_in = None
        self.gap = None
        self.commits = []

    @classmethod
    def from_cursor(cls, cursor):
        log = cls(cursor["version"], cursor["table_id"], cursor.get("data_version"))
        log.etag = cursor.get("etag")
        log.data_timestamp = delta_log.timestamp(cursor.get("data_timestamp"))
        stand_in = cursor.get("stand_in")
        log.stand_in = stand_in if isinstance(stand_in, str) else None
        rows = cursor.get("commits")
        log.commits = [r for r in (rows if isinstance(rows, list) else []) if isinstance(r, dict)]
        return log

    def take(self, commit, etag):
        """Take in the next commit's summary."""
        table_id = commit.get("table_id")
        if table_id and self.table_id and table_id != self.table_id:
            # Another table's log goes on from here: its data start at this commit.
            self._data(commit)
        if table_id:
            self.table_id = table_id
        if commit["data_change"]:
            self._data(commit)
        self.version, self.etag = commit["version"], etag
        self.commits.append(_commit_row(commit))
        del self.commits[:-COMMITS_KEPT]

    def _data(self, commit):
        self.data_version, self.data_timestamp = commit["version"], commit.get("timestamp")
        self.resolved, self.stand_in = True, None

    def cursor(self, data):
        cursor = {
            "uri": data["uri"],
            "version": self.version,
            "etag": self.etag,
            "table_id": self.table_id,
            "data_version": self.data_version,
            "data_timestamp": self.data_timestamp,
            "commits": self.commits[-COMMITS_KEPT:],
        }
        if self.stand_in:
            cursor["stand_in"] = self.stand_in
        if self.gap:
            cursor["gap"] = self.gap
        return cursor


def _valid_cursor(cursor, data):
    if not isinstance(cursor, dict) or cursor.get("uri") != data["uri"]:
        return False
    version, data_version = cursor.get("version"), cursor.get("data_version")
    return (
        delta_log.is_int(version)
        and 0 <= version <= delta_log.MAX_VERSION
        and isinstance(cursor.get("table_id"), str)
        and bool(cursor["table_id"])
        and isinstance(cursor.get("etag"), (str, type(None)))
        and (
            data_version is None
            or (delta_log.is_int(data_version) and 0 <= data_version <= version)
        )
    )


def _read_forward(session, data, log, commits, end, deadline):
    """Read the commits after ``log.version`` up to ``end`` into ``log``.

    Returns ``"done"``, ``"incomplete"`` (time ran short; ``log`` holds the unbroken part
    read) or ``"gone"`` (a listed commit no longer exists: the table is being replaced).
    """
    versions = list(range(log.version + 1, end + 1))
    read, complete = _read_commits(session, data, versions, deadline)
    for summary in read:
        if summary is None:
            return "gone"
        log.take(summary, commits.get(summary["version"]))
    return "done" if complete else "incomplete"


def _incomplete(data, log, first, last, deadline):
    """The ``SourceIncomplete`` of a read of versions ``first..last`` that stopped after
    ``log.version``: every commit up to it is read, and its cursor says so."""
    left = max(0.0, deadline - time.monotonic()) if deadline is not None else 0.0
    return SourceIncomplete(
        "Read the commits of %s up to version %d of %d before the check's time ran out "
        "(%d of %d this check, %.1f s left); the next check continues from version %d."
        % (
            _where(data, ""),
            log.version,
            last,
            log.version - first + 1,
            last - first + 1,
            left,
            log.version,
        ),
        log.cursor(data),
    )


def _gap(data, missing, cursor):
    """The gap to keep in the cursor (None without one), or the ``SourceError`` once it has
    been seen by ``GAP_CHECKS`` checks."""
    if missing is None:
        return None
    previous = cursor.get("gap") if isinstance(cursor, dict) else None
    checks = 1
    if (
        isinstance(previous, dict)
        and previous.get("version") == missing
        and delta_log.is_int(previous.get("checks"))
    ):
        checks = previous["checks"] + 1
    if checks >= GAP_CHECKS:
        raise SourceError(
            "The Delta commit %s is missing although later commits are listed, on %d checks in "
            "a row: the log has a hole (a deleted commit file, or a store listing out of "
            "order). The value stays at version %d until it appears."
            % (_where(data, commit_name(missing)), checks, missing - 1)
        )
    return {"version": missing, "checks": checks}


def _parse_baseline(baseline):
    """``(version, table id)`` of an announced value ``"<version>@<table id>"``, or None."""
    if not isinstance(baseline, str):
        return None
    match = BASELINE_RE.match(baseline)
    return (int(match.group(1)), match.group(2)) if match else None


def _resolve(session, data, log, checkpoint, checkpoints, baseline, deadline, cursor):
    """Find the data version at or before ``checkpoint`` when no commit after it changed data.

    Walks back from the checkpoint's commit (``MAX_WALK_BACK`` commits, or down to the
    baseline's version of the same table when that is within ``MAX_WALK_BACK_TO_BASELINE``)
    to the latest commit that changed data. When the walk ends first (older commits cleaned
    up, or the limit), the baseline is the value only if it is proved (see the module
    docstring); otherwise the checkpoint's version stands in, with the reason.
    """
    if log.table_id is None:
        log.table_id = checkpoint_table_id(session, data, checkpoints.get(checkpoint, []))
    lowest = max(0, checkpoint - MAX_WALK_BACK + 1)
    base = _parse_baseline(baseline)
    same_table = base is not None and base[1] == log.table_id
    if same_table and checkpoint - MAX_WALK_BACK_TO_BASELINE <= base[0] < lowest:
        lowest = base[0]
    read, complete = _read_commits(
        session,
        data,
        list(range(checkpoint, lowest - 1, -1)),
        deadline,
        first=1,
        stop=lambda summary: summary["data_change"],
    )
    if not complete:
        raise SourceIncomplete(
            "Walking back through the commits of %s before version %d ran out of time; the next "
            "check starts again." % (_where(data, ""), checkpoint),
            cursor,
        )
    found = [s for s in read if s is not None]
    log.commits = [_commit_row(s) for s in reversed(found)] + log.commits
    del log.commits[:-COMMITS_KEPT]
    log.resolved = True
    if found and found[-1]["data_change"]:
        log.data_version, log.data_timestamp = found[-1]["version"], found[-1].get("timestamp")
        return
    oldest = found[-1]["version"] if found else checkpoint + 1
    if oldest == 0:
        log.data_version = None  # the whole history is read: no commit ever changed data
        return
    unknown = oldest - 1  # every commit after it was read and none changed data
    if same_table and unknown <= base[0] <= log.version:
        # Proved: the baseline's version is at or after the last one the log cannot tell,
        # and no commit after it changed data.
        log.data_version = base[0]
        return
    gone = bool(read) and read[-1] is None
    why = (
        "commit %d and older are gone from the log (cleaned up)" % unknown
        if gone
        else "the walk back stops after %d commits" % len(found)
    )
    if baseline is None:
        against = "nothing was announced before"
    elif base is None:
        against = "the last announced value %r is not a Delta version" % baseline
    elif not same_table:
        against = "the last announced value %s is of another table id" % baseline
    elif base[0] > log.version:
        against = "the last announced value %s is newer than the log read (version %d)" % (
            baseline,
            log.version,
        )
    else:
        against = "the last announced value %s is older than what remains of the log" % baseline
    log.data_version = checkpoint
    log.stand_in = (
        "no commit from version %d to %d changed data and %s, so the data version (%d or "
        "older) cannot be told; %s; version %d (the checkpoint) stands for it"
        % (oldest, log.version, why, unknown, against, checkpoint)
    )


def _continue(session, data, cursor, deadline):
    """Read the commits after the cursor's version with one listing into a ``_Log``.

    Returns None when the cursor's own commit is gone or was rewritten (a deleted or
    re-created table), or a listed commit vanished: the log must be read afresh.
    """
    version = cursor["version"]
    start = commit_name(version - 1) if version > 0 else None
    commits, _checkpoints = _list_log(session, data, start)
    if commits.get(version) is None or (cursor.get("etag") and commits[version] != cursor["etag"]):
        return None
    log = _Log.from_cursor(cursor)
    end, missing = _contiguous(commits, version)
    outcome = _read_forward(session, data, log, commits, end, deadline)
    if outcome == "gone":
        return None
    if outcome == "incomplete":
        raise _incomplete(data, log, version + 1, end, deadline)
    log.gap = _gap(data, missing, cursor)
    return log


def _read_afresh(session, data, baseline, deadline, cursor):
    """Read the log without a usable cursor into a ``_Log`` (None: no commit at all).

    ``_last_checkpoint`` says where to list from; when no checkpoint of that version is
    listed (a stale or bogus file) the log is listed from its start. The commits after the
    newest checkpoint are read; when none of them changed data, ``_resolve`` walks back.
    """
    hint = _last_checkpoint(session, data)
    commits, checkpoints = _list_log(session, data, "%020d" % hint if hint is not None else None)
    if hint is not None and hint not in checkpoints:
        commits, checkpoints = _list_log(session, data, None)
    checkpoint = max(checkpoints) if checkpoints else None
    if checkpoint is None and not commits:
        return None
    if checkpoint is None:
        if 0 not in commits:
            raise SourceError(
                "The Delta log %s has commits from version %d on but neither %s nor a "
                "checkpoint: it cannot be read (a table being deleted, or a log cleaned up "
                "without a checkpoint)." % (_where(data, ""), min(commits), commit_name(0))
            )
        log = _Log(-1)
    else:
        log = _Log(checkpoint, resolved=False)
        log.etag = commits.get(checkpoint)
    start = log.version
    end, missing = _contiguous(commits, start)
    outcome = _read_forward(session, data, log, commits, end, deadline)
    if outcome == "gone":
        raise SourceError(
            "A commit of %s listed a moment ago is gone: the table is being replaced; the next "
            "check reads it again." % _where(data, "")
        )
    if log.table_id is None and checkpoint is not None:
        log.table_id = checkpoint_table_id(session, data, checkpoints.get(checkpoint, []))
    if not log.resolved:
        _resolve(session, data, log, checkpoint, checkpoints, baseline, deadline, cursor)
    if outcome == "incomplete":
        raise _incomplete(data, log, start + 1, end, deadline)
    log.gap = _gap(data, missing, cursor)
    return log


def check(data, session, cursor=None, baseline=None):
    """Check the table once, from ``cursor`` when it is one this source left.

    Parameters
    ----------
    data : dict
        The normalized ``[data]`` table.
    session : S3Session
        From ``open_session``; its ``deadline`` (a ``time.monotonic()`` instant, or None) is
        when the check's time is up.
    cursor : dict, optional
        The previous check's ``Observation.cursor``.
    baseline : str, optional
        The value last announced; compared with when the log can no longer tell the data
        version (see the module docstring).

    Returns
    -------
    Observation
        ``value`` ``"<version>@<table id>"`` (None when the table has no commit, or none that
        changed data); ``summary`` with ``table_version``, ``table_id``, ``latest_version``,
        the recent ``commits`` and, when the value is a stand-in, ``cannot_tell``; ``cursor``
        for the next check.

    Raises
    ------
    SourceIncomplete
        Time ran short reading a long log; its ``cursor`` is the progress made.
    SourceError
        S3 failed, a log file is malformed (the message names file and field) or a missing
        commit did not appear within ``GAP_CHECKS`` checks.
    """
    deadline = getattr(session, "deadline", None)
    log = None
    if _valid_cursor(cursor, data):
        log = _continue(session, data, cursor, deadline)
    if log is None:
        log = _read_afresh(session, data, baseline, deadline, cursor)
    if log is None:
        return Observation(
            None, {"state": "absent", "uri": data["uri"]}, cursor={"uri": data["uri"]}
        )
    summary = {
        "uri": data["uri"],
        "table_id": log.table_id,
        "latest_version": log.version,
        "commits": log.commits[-COMMITS_KEPT:],
    }
    if log.gap:
        summary["waiting_for"] = log.gap["version"]
    if log.data_version is None:
        summary.update(
            state="absent", reason="no commit of the table changed data (an empty table)"
        )
        return Observation(None, summary, cursor=log.cursor(data))
    value = "%d@%s" % (log.data_version, log.table_id or "unknown")
    summary.update(
        state="present",
        table_version=log.data_version,
        payload={
            "table_version": str(log.data_version),
            "table_id": log.table_id or "",
            "latest_version": str(log.version),
        },
    )
    if log.data_timestamp is not None:
        summary["table_version_timestamp"] = log.data_timestamp
    if log.stand_in and baseline != value:
        summary["cannot_tell"] = log.stand_in
    return Observation(value, summary, cursor=log.cursor(data))
