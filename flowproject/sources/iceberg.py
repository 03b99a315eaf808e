"""Apache Iceberg source: watch a table's snapshots.

The table is named one of two ways:

- ``table = "namespace.table"`` with ``catalog = "<name>"``: loaded through a pyiceberg
  catalog (REST, Glue, SQL, ...) configured the catalog's own way, in ``~/.pyiceberg.yaml``
  or ``PYICEBERG_CATALOG__<NAME>__<PROPERTY>`` environment variables (which a remote task
  needs set too: see the README). Catalog properties and credentials never go in
  ``flowconfig.toml``, and never appear in an error.
- ``location = "s3://bucket/path/to/table"``: the table's folder, read with boto3 (same
  credential and endpoint rules as the S3 source). The check lists ``metadata/`` and reads the
  current metadata file, chosen by Iceberg's own rules (``iceberg_metadata``: valid names
  only, ``version-hint.text`` first); a single metadata file never changes, so it cannot be
  watched.

The value is the id of the **newest snapshot that changed data**, walking back from the
current snapshot through its parents: a snapshot whose operation is ``replace``
(``rewrite_data_files``, ``rewrite_manifests``, compaction) changes no data, any other
(``append``, ``overwrite``, ``delete``, or none recorded) does. It is a version a training
flow can pin (Iceberg time travel: ``table.scan(snapshot_id=N)``), holding the same rows as
the current snapshot (``latest_version`` in the payload, for when the value's snapshot has
since expired). So a ``replace`` alone announces nothing, and an append followed by a
``replace`` announces the append. A missing table, or a table without a snapshot, is the
absent state.

The cursor is a hint. It records the current snapshot a check examined and the value that
resolved to. A check walks back from the current snapshot and stops at the first of:

1. a snapshot that changed data: the value is that snapshot;
2. the snapshot the cursor examined (only ``replace`` snapshots since): the cursor's value;
3. the baseline's snapshot (``baseline``, the value last announced): the baseline, since
   only ``replace`` snapshots lie between (a baseline that is itself a ``replace``, as an
   older version of this source announced, stays);
4. the end of the known history: the parent of the last snapshot reached has expired
   (``expire_snapshots``; pyiceberg then drops the parent id, Java keeps a dangling one).
   The walk goes on through the older metadata files the current one lists
   (``metadata-log``, newest first, at most ``OLDER_METADATA_READS``, before
   ``session.deadline``): the file written before an expiry still lists the snapshots it
   removed, with their parents and operations, which never change. When none of them
   helps (deleted with ``write.metadata.delete-after-commit.enabled``), only ``replace``
   snapshots were seen but what came before cannot be read, so the check **cannot
   tell**: the value is the oldest snapshot reached (it stays the same while
   more compactions are committed on top) and ``summary["cannot_tell"]`` says why. This is
   never by itself a change; the decision follows ``on_first_check``. No weaker proof of
   "same data as the baseline" is attempted: snapshot summaries' ``total-records`` /
   ``total-data-files`` can be equal across an overwrite, and the baseline's data files
   being still reachable proves nothing (an append keeps them, a compaction rewrites them).

Without a cursor, steps 1, 3 and 4 give the value the cursor would have given, or "cannot
tell"; with one, the walk usually stops at the current snapshot, so an expired history is
never walked into. A cursor that said "cannot tell" says so again while the baseline
differs from its value (a decision that did not move the baseline).

Catalog properties that are secrets (named like ``*secret*``, ``*password*``, ``*token*``,
``*credential*``...) and everything between ``://`` and the last ``@`` of any URI-looking
property (an unencoded ``@`` in a password included), with the fragments a driver may show
of them, are redacted from every message this source raises, as are the AWS chain's secret
variables.
"""

import os
import re
import time
from contextlib import contextmanager
from urllib.parse import unquote

from ..exceptions import SourceError
from ..schema_check import is_integer
from . import s3
from .iceberg_metadata import VERSION_HINT, choose_metadata, parse_metadata, table_snapshots
from .observation import Observation
from .snowflake import SECRET_KEY_PATTERN, secret_keys

TYPE = "iceberg"

# A catalog check imports pyiceberg; a location check needs boto3 only.
PACKAGES = {"boto3": ">=1.34", "pyiceberg": ">=0.10"}

# The flow reads the state's cursor before checking (see flowproject.sources).
USES_CURSOR = True

CONFIG_SCHEMA = {
    "type": "object",
    "properties": {
        "type": {"const": "iceberg"},
        "catalog": {
            "type": "string",
            "pattern": "^[A-Za-z0-9_-]+$",
            "x-expected": "the name of a pyiceberg catalog (letters, digits, '_', '-')",
        },
        "table": {
            "type": "string",
            "pattern": r"^[^.\s]+(\.[^.\s]+)+$",
            "x-expected": "'namespace.table'",
        },
        "location": {
            "type": "string",
            "pattern": "^s3a?://[a-z0-9][a-z0-9.-]{1,61}[a-z0-9](/.*)?$",
            "x-expected": "'s3://<bucket>/<path to the table>'",
        },
        "role": s3.CONFIG_SCHEMA["properties"]["role"],
    },
    "required": ["type"],
    # Secret-looking keys are reported by validate() with a message of their own.
    "patternProperties": {SECRET_KEY_PATTERN: True},
    "additionalProperties": False,
}

# Operations of snapshots that change no data (Iceberg spec: "replace" rewrites data and
# delete files without changing the table's data).
NO_DATA_CHANGE = ("replace",)

# Older metadata files read, newest first, when the walk reaches an expired snapshot: the
# file written just before an expire_snapshots still lists every snapshot it removed.
OLDER_METADATA_READS = 3

# Snapshots kept in the summary for the card, newest last.
SNAPSHOTS_SHOWN = 20

# Properties of a catalog whose values are secrets (scrubbed from every message).
SECRET_PROPERTY_RE = re.compile(r"(?i)(secret|password|token|credential|session|key-id)")


def validate(data):
    """Exactly one of ``table`` (with ``catalog``) or ``location``; a folder, not a file."""
    problems = [
        "%s: secrets never go in flowconfig.toml; configure the catalog in ~/.pyiceberg.yaml "
        "or PYICEBERG_CATALOG__<NAME>__* environment variables" % key
        for key in secret_keys(data)
    ]
    has_table, has_location = "table" in data, "location" in data
    if has_table == has_location:
        problems.append(
            "data: set either table (with catalog) or location, found %s"
            % ("both" if has_table else "neither")
        )
    if has_table and "catalog" not in data:
        problems.append(
            "data.catalog: missing; table %r is loaded through a pyiceberg catalog: name it "
            "(configured in ~/.pyiceberg.yaml or PYICEBERG_CATALOG__<NAME>__* variables)"
            % data.get("table")
        )
    if has_location and "catalog" in data:
        problems.append("data.catalog: only applies with table, not with location")
    if has_table and "role" in data:
        problems.append("data.role: only applies with location (the catalog has its own)")
    location = data.get("location")
    if isinstance(location, str) and location.startswith("s3"):
        if location.rstrip("/").endswith(".metadata.json"):
            problems.append(
                "data.location: a single metadata file never changes; give the table's folder "
                "(the one holding metadata/), found %r" % location
            )
        elif "://" in location and not location.split("://", 1)[1].partition("/")[2].strip("/"):
            problems.append(
                "data.location: expected the table's folder inside the bucket, found %r" % location
            )
        bucket = "s3://" + location.split("://", 1)[1].partition("/")[0]
        problems += [
            p.replace("data.bucket:", "data.location:", 1) for p in s3.bucket_name_problems(bucket)
        ]
    return problems


def normalize(data):
    """For a location: ``bucket`` and ``key`` (the table's folder, ending in '/')."""
    data = dict(data)
    if "location" in data:
        rest = data["location"].split("://", 1)[1]
        bucket, _, key = rest.partition("/")
        key = key.strip("/")
        data.update(location="s3://%s/%s" % (bucket, key), bucket=bucket, key=key + "/")
    return data


def describe(data):
    """``iceberg table db.events (catalog lake)`` or ``iceberg table s3://b/path``."""
    if "location" in data:
        return "iceberg table %s" % data["location"]
    return "iceberg table %s (catalog %s)" % (data["table"], data["catalog"])


def identity(data, env=None):
    """What the value depends on: the catalog and table name, or the endpoint and location."""
    if "location" in data:
        return {
            "type": TYPE,
            "endpoint": s3.endpoint_host(env),
            "bucket": data["bucket"],
            "key": data["key"],
        }
    return {"type": TYPE, "catalog": data["catalog"], "table": data["table"]}


def absent_message(data):
    """What an absent observation means, for people."""
    if "location" in data:
        return (
            "no Iceberg table with a snapshot at %s (no *.metadata.json under metadata/)"
            % (data["location"])
        )
    return "no Iceberg table %s with a snapshot in catalog %s" % (data["table"], data["catalog"])


# --------------------------------------------------------------------------------------
# Sessions
# --------------------------------------------------------------------------------------


class CatalogSession(object):
    """The pyiceberg catalog of one check, loaded on first use, and what it was asked."""

    def __init__(self, data):
        self.data = data
        self.requests = []
        self._catalog = None
        self.secrets = []

    @property
    def catalog(self):
        if self._catalog is None:
            started = time.monotonic()
            try:
                from pyiceberg.catalog import load_catalog
            except ImportError:
                raise SourceError(
                    "[data] type = 'iceberg' with a catalog needs pyiceberg: "
                    "pip install 'flowproject[iceberg]'"
                ) from None
            # Known before loading: a catalog that fails to load may quote its URI.
            self.secrets = configured_secrets(self.data["catalog"])
            try:
                self._catalog = load_catalog(self.data["catalog"])
            except Exception as e:
                raise SourceError(
                    "Could not load pyiceberg catalog %r (from ~/.pyiceberg.yaml or "
                    "PYICEBERG_CATALOG__%s__* variables): %s"
                    % (self.data["catalog"], self.data["catalog"].upper(), scrub(e, self.secrets))
                ) from None
            self.secrets += catalog_secrets(getattr(self._catalog, "properties", {}) or {})
            self.record("load_catalog", time.monotonic() - started)
        return self._catalog

    def record(self, what, seconds, **facts):
        self.requests.append({"request": what, "seconds": round(seconds, 4), **facts})

    def close(self):
        self._catalog = None


# --------------------------------------------------------------------------------------
# Secrets: redacted from every message by structure, whether or not a URI parses
# --------------------------------------------------------------------------------------

# Fragments of a password shorter than this are not redacted on their own (a one-letter
# fragment would blank every such letter of the message and hide next to nothing).
MIN_SECRET_PIECE = 3

# Environment variables of the AWS chain holding secrets.
AWS_SECRET_VARIABLES = ("AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN")


def _pieces(secret):
    """A secret, its URL-decoded form, and what lies before and after each ``@`` and ``:`` of
    them: a driver that splits an unencoded ``user:pa@ss@host`` at the first ``@`` shows
    ``ss@host`` as the host."""
    found = {secret}
    for text in {secret, unquote(secret)}:
        found.add(text)
        for match in re.finditer(r"[@:]", text):
            found.update((text[: match.start()], text[match.end() :]))
        found.update(re.split(r"[@:]", text))
    return [s for s in found if s == secret or len(s) >= MIN_SECRET_PIECE]


def uri_secrets(value):
    """The credentials of a URI-looking value: everything between ``://`` and the last ``@``
    (before any whitespace), and its password (after the first ``:``), with their pieces.
    Taking the last ``@`` errs towards redacting more (an ``@`` in a path or query)."""
    secrets = []
    for match in re.finditer(r"://(\S*)@", value):
        userinfo = match.group(1)
        secrets += _pieces(userinfo)
        user, colon, password = userinfo.partition(":")
        if colon and password:
            secrets += _pieces(password)
        elif not colon:
            secrets += _pieces(user)  # a token alone: https://<token>@host
    return secrets


def catalog_secrets(properties):
    """The secrets among a catalog's properties, to scrub from messages: the values of
    secret-named properties, and the credentials of every URI-looking value."""
    secrets = []
    for key, value in _flat_properties(properties):
        if not isinstance(value, str) or not value:
            continue
        if SECRET_PROPERTY_RE.search(key):
            secrets += _pieces(value)
        if "://" in value:
            secrets += uri_secrets(value)
    return secrets


def _flat_properties(properties, prefix=""):
    for key, value in (properties or {}).items():
        if isinstance(value, dict):  # a nested table of ~/.pyiceberg.yaml
            yield from _flat_properties(value, "%s%s." % (prefix, key))
        else:
            yield "%s%s" % (prefix, key), value


def configured_secrets(name):
    """The secrets of catalog ``name``'s configuration (``~/.pyiceberg.yaml`` and
    ``PYICEBERG_CATALOG__<NAME>__*`` variables), read before loading it."""
    properties = {}
    try:
        from pyiceberg.utils.config import Config

        properties.update(Config().get_catalog_config(name) or {})
    except Exception:
        pass  # an unreadable configuration: load_catalog says why, scrubbed with the rest
    prefix = "PYICEBERG_CATALOG__%s__" % name.upper()
    for variable, value in os.environ.items():
        if variable.upper().startswith(prefix):
            key = variable[len(prefix) :].lower().replace("__", ".").replace("_", "-")
            properties[key] = value
    return catalog_secrets(properties)


def environment_secrets():
    """Secrets of the AWS credential chain in the environment."""
    return [os.environ[v] for v in AWS_SECRET_VARIABLES if os.environ.get(v)]


def scrub_text(text, secrets):
    """``text`` without ``secrets`` and without what precedes the last ``@`` of any URI."""
    text = re.sub(r"://\S*@", "://[redacted]@", text)
    for secret in sorted(set(s for s in secrets if s), key=len, reverse=True):
        text = text.replace(secret, "[redacted]")
    return text


def scrub(error, secrets):
    """An exception as one line, without secrets or the credentials of a URI."""
    text = "%s: %s" % (error.__class__.__name__, " ".join(str(error).split()))
    return scrub_text(text, secrets)


@contextmanager
def open_session(data):
    """An S3 session for a location, a catalog session for a table."""
    if "location" in data:
        with s3.open_session(dict(data, list_concurrency=1)) as session:
            yield session
        return
    session = CatalogSession(data)
    try:
        yield session
    finally:
        session.close()


# --------------------------------------------------------------------------------------
# Reading the table's metadata
# --------------------------------------------------------------------------------------


def newest_metadata(session, data):
    """The key of the current metadata file under the location's ``metadata/``, or None
    (see ``iceberg_metadata`` for which file that is)."""
    prefix = data["key"] + "metadata/"
    started = time.monotonic()
    files, pages = {}, 0
    for page in s3._pages(session, data, prefix, delimiter="/"):
        pages += 1
        for obj in page.get("Contents", ()):
            files[obj["Key"][len(prefix) :]] = obj["LastModified"]
    session.record("ListObjectsV2", time.monotonic() - started, pages=pages)
    name = choose_metadata(files, lambda: _get(session, data, prefix + VERSION_HINT))
    return None if name is None else prefix + name


def _get(session, data, key):
    from botocore.exceptions import BotoCoreError, ClientError

    started = time.monotonic()
    try:
        body = session.client.get_object(Bucket=data["bucket"], Key=key)["Body"].read()
    except ClientError as e:
        s3._raise_for(e, data, "reading s3://%s/%s" % (data["bucket"], key))
    except BotoCoreError as e:
        raise SourceError(
            "Could not reach S3 for s3://%s/%s: %s" % (data["bucket"], key, e)
        ) from None
    session.record("GetObject", time.monotonic() - started, key=key.rsplit("/", 1)[-1])
    return body


def read_location_metadata(session, data):
    """The current metadata of the location (``table_snapshots``), or None."""
    key = newest_metadata(session, data)
    if key is None:
        return None
    where = "s3://%s/%s" % (data["bucket"], key)
    table = table_snapshots(parse_metadata(_get(session, data, key), where), where)
    table["metadata_location"] = where
    table["read"] = lambda path: _read_location_file(session, data, path)
    return table


def _read_location_file(session, data, path):
    """An older metadata file of the location's table (``table_snapshots``)."""
    bucket, _, key = path.partition("://")[2].partition("/")
    if not path.startswith(("s3://", "s3a://")) or bucket != data["bucket"]:
        raise SourceError("%s is not in s3://%s" % (path, data["bucket"]))
    return table_snapshots(parse_metadata(_get(session, data, key), path), path)


def read_catalog_metadata(session, data):
    """The table's current metadata through the catalog (``table_snapshots``), or None when
    the table does not exist."""
    catalog = session.catalog
    started = time.monotonic()
    try:
        from pyiceberg.exceptions import NoSuchNamespaceError, NoSuchTableError

        try:
            table = catalog.load_table(data["table"])
        except (NoSuchTableError, NoSuchNamespaceError):
            session.record("load_table", time.monotonic() - started, found=False)
            return None
    except SourceError:
        raise
    except Exception as e:
        raise SourceError(
            "Could not load Iceberg table %s from catalog %r: %s"
            % (data["table"], data["catalog"], scrub(e, session.secrets))
        ) from None
    session.record("load_table", time.monotonic() - started, found=True)
    meta = table.metadata
    doc = {
        "table-uuid": str(meta.table_uuid),
        "current-snapshot-id": meta.current_snapshot_id,
        "snapshots": [
            {
                "snapshot-id": s.snapshot_id,
                "parent-snapshot-id": s.parent_snapshot_id,
                "timestamp-ms": s.timestamp_ms,
                "summary": _summary_dict(s.summary),
            }
            for s in meta.snapshots
        ],
        "metadata-log": [{"metadata-file": e.metadata_file} for e in meta.metadata_log],
    }
    where = str(table.metadata_location)
    found = table_snapshots(doc, where)
    found["metadata_location"] = where
    found["read"] = lambda path: _read_catalog_file(session, table, path)
    return found


def _read_catalog_file(session, table, path):
    """An older metadata file of a catalog's table (``table_snapshots``), read with the
    table's own FileIO."""
    started = time.monotonic()
    try:
        with table.io.new_input(path).open() as stream:
            body = stream.read()
    except Exception as e:
        raise SourceError("Could not read %s: %s" % (path, scrub(e, session.secrets))) from None
    session.record("read_metadata", time.monotonic() - started, key=path.rsplit("/", 1)[-1])
    return table_snapshots(parse_metadata(body, path), path)


def _summary_dict(summary):
    if summary is None:
        return {}
    found = {k: v for k, v in dict(getattr(summary, "additional_properties", {}) or {}).items()}
    operation = getattr(summary, "operation", None)
    found["operation"] = getattr(operation, "value", operation)
    return found


# --------------------------------------------------------------------------------------
# The value: the newest snapshot that changed data (see the module docstring)
# --------------------------------------------------------------------------------------


def _snapshot_id(value):
    """A snapshot id from a cursor (int) or a baseline (text), or None."""
    if is_integer(value):
        return value
    if isinstance(value, str) and re.match(r"^-?[0-9]{1,20}$", value):
        return int(value)
    return None


def resolve(table, cursor=None, baseline=None, older=()):
    """The snapshot whose data the table's current snapshot holds, as the value.

    Walks back from the current snapshot through ``replace`` snapshots and stops at the
    first of: a snapshot that changed data (the value), the snapshot the cursor examined
    (the cursor's value), the ``baseline`` snapshot (the baseline). A walk that reaches an
    expired snapshot continues through the older metadata files that still list it; when
    none does, it cannot tell: the value is the oldest snapshot reached, with the reason.

    Parameters
    ----------
    table : dict
        From ``table_snapshots``, with a current snapshot.
    cursor : dict, optional
        The previous check's cursor, of the same table.
    baseline : str, optional
        The value last announced.
    older : iterable of dict
        The ``table_snapshots`` of older metadata files of the same table, newest first;
        consumed only as far as the walk needs.

    Returns
    -------
    tuple
        ``(snapshot id, reason it cannot tell or None)``.
    """
    snapshots = dict(table["snapshots"])
    cursor = cursor or {}
    value = _snapshot_id(cursor.get("snapshot_id"))
    # A cursor written before examined_id existed examined the snapshot it holds as value.
    examined = _snapshot_id(cursor.get("examined_id", cursor.get("snapshot_id")))
    baseline_id = _snapshot_id(baseline)
    older = iter(older)
    while True:
        walked, snapshot_id = [], table["current_id"]
        seen = set()
        while True:
            if snapshots[snapshot_id]["operation"] not in NO_DATA_CHANGE:
                return snapshot_id, None
            if value is not None and snapshot_id == examined:
                reason = cursor.get("cannot_tell")
                # Still undecided only while the baseline is not the value it could not tell.
                unsettled = isinstance(reason, str) and baseline_id not in (None, value)
                return value, (reason if unsettled else None)
            if snapshot_id == baseline_id:
                return snapshot_id, None
            walked.append(snapshot_id)
            seen.add(snapshot_id)
            parent = snapshots[snapshot_id]["parent"]
            if parent is None or parent not in snapshots:
                break
            if parent in seen:
                raise SourceError(
                    "%s: field snapshots[].parent-snapshot-id: snapshot %d is its own ancestor"
                    % (table.get("metadata_location"), parent)
                )
            snapshot_id = parent
        previous = next(older, None)
        if previous is None:
            return walked[-1], _cannot_tell(snapshots, walked[-1], baseline_id)
        _merge(snapshots, previous)


def _merge(snapshots, previous):
    """Add an older metadata file's snapshots; a parent id the newer file dropped (pyiceberg
    drops the parent id of a snapshot whose parent it expired) is taken back from it.
    Sound: a snapshot id names one snapshot of a table, its parent and operation for good."""
    for snapshot_id, snapshot in previous["snapshots"].items():
        mine = snapshots.get(snapshot_id)
        if mine is None:
            snapshots[snapshot_id] = snapshot
        elif mine["parent"] is None and snapshot["parent"] is not None:
            snapshots[snapshot_id] = dict(mine, parent=snapshot["parent"])


def _cannot_tell(snapshots, oldest, baseline_id):
    parent = snapshots[oldest]["parent"]
    gone = (
        "its parent is not recorded (expired)"
        if parent is None
        else "its parent %d has expired" % parent
    )
    since = (
        "which snapshot last changed data"
        if baseline_id is None
        else "whether data changed since snapshot %d" % baseline_id
    )
    return (
        "only replace snapshots (compactions) lead back from the current snapshot to "
        "snapshot %d, and %s: the metadata cannot tell %s" % (oldest, gone, since)
    )


def older_tables(table, session):
    """The tables of the current metadata file's predecessors (its ``metadata-log``), newest
    first: at most ``OLDER_METADATA_READS``, before ``session.deadline``. A file that cannot
    be read, or of another table, is skipped: it only cannot help the walk."""
    deadline = getattr(session, "deadline", None)
    for path in table["previous_files"][:OLDER_METADATA_READS]:
        if deadline is not None and time.monotonic() > deadline:
            return
        try:
            previous = table["read"](path)
        except SourceError:
            continue  # deleted with its snapshots, or unreadable
        if previous["table_uuid"] == table["table_uuid"]:
            yield previous


def _snapshot_rows(table):
    """The current snapshot's ancestry, newest last (at most ``SNAPSHOTS_SHOWN``), for the
    card: id, operation, time, records added."""
    snapshots = table["snapshots"]
    rows, snapshot_id = [], table["current_id"]
    while snapshot_id in snapshots and len(rows) < SNAPSHOTS_SHOWN:
        s = snapshots[snapshot_id]
        row = {
            "version": snapshot_id,
            "operation": s["operation"],
            "timestamp": s["timestamp"],
            "data_change": s["operation"] not in NO_DATA_CHANGE,
        }
        added = s["summary"].get("added-records")
        if isinstance(added, str) and added.isdigit():
            row["rows_added"] = int(added)
        rows.append(row)
        snapshot_id = s["parent"]
    return list(reversed(rows))


def check(data, session, cursor=None, baseline=None):
    """Check the table once.

    Parameters
    ----------
    data : dict
        The normalized ``[data]`` table.
    session : S3Session or CatalogSession
        From ``open_session``.
    cursor : dict, optional
        The previous check's ``Observation.cursor``: the snapshot it examined and the value
        that resolved to.
    baseline : str, optional
        The value last announced (a snapshot id), or None.

    Returns
    -------
    Observation
        ``value`` the snapshot id (as text) of the newest snapshot that changed data (None
        when the table or its snapshot is missing); ``summary["cannot_tell"]`` says why,
        when expired snapshots hide whether data changed.
    """
    try:
        return _check(data, session, cursor, baseline)
    except SourceError as e:
        message = str(getattr(e, "message", e))
        secrets = list(getattr(session, "secrets", [])) + environment_secrets()
        scrubbed = scrub_text(message, secrets)
        if scrubbed == message:
            raise
        raise SourceError(scrubbed) from None


def _check(data, session, cursor, baseline):
    if "location" in data:
        table = read_location_metadata(session, data)
    else:
        table = read_catalog_metadata(session, data)
    if table is None or table["current_id"] is None:
        return Observation(None, {"state": "absent", "table": describe(data)}, cursor={})
    current_id, uuid = table["current_id"], table["table_uuid"]
    same_table = isinstance(cursor, dict) and cursor.get("table_uuid") == uuid
    value_id, cannot_tell = resolve(
        table, cursor if same_table else None, baseline, older_tables(table, session)
    )
    current = table["snapshots"][current_id]
    summary = {
        "state": "present",
        "table": describe(data),
        "table_version": value_id,
        "table_id": uuid,
        "latest_version": current_id,
        "current_operation": current["operation"],
        "commits": _snapshot_rows(table),
        "payload": {
            "table_version": str(value_id),
            "table_id": str(uuid or ""),
            "latest_version": str(current_id),
        },
    }
    next_cursor = {"examined_id": current_id, "snapshot_id": value_id, "table_uuid": uuid}
    if cannot_tell:
        summary["cannot_tell"] = cannot_tell
        next_cursor["cannot_tell"] = cannot_tell
    return Observation(str(value_id), summary, cursor=next_cursor)
