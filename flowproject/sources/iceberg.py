"""Apache Iceberg source: watch a table's current snapshot.

The table is named one of two ways:

- ``table = "namespace.table"`` with ``catalog = "<name>"``: loaded through a pyiceberg
  catalog (REST, Glue, SQL, ...) configured the catalog's own way, in ``~/.pyiceberg.yaml``
  or ``PYICEBERG_CATALOG__<NAME>__<PROPERTY>`` environment variables (which a remote task
  needs set too: see the README). Catalog properties and credentials never go in
  ``flowconfig.toml``, and never appear in an error.
- ``location = "s3://bucket/path/to/table"``: the table's folder, read with boto3 (same
  credential and endpoint rules as the S3 source). The check lists ``metadata/`` and reads the
  newest ``*.metadata.json`` (a single metadata file never changes, so it cannot be watched).

The value is the current snapshot id, a version a training flow can pin (Iceberg time
travel: ``table.scan(snapshot_id=N)``). A snapshot whose operation is ``replace``
(compaction, ``rewrite_data_files``) changes no data: walking back from the current snapshot
through its parents to the value the previous check reported (the cursor), the value moves
only if one of them is an ``append``, ``overwrite`` or ``delete``. So an append followed by a
``replace`` is announced (with the replace's id, the newest), a ``replace`` alone is not. A
missing table, or a table without a snapshot, is the absent state.
"""

import gzip
import json
import re
import time
from contextlib import contextmanager

from ..exceptions import SourceError
from . import s3
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
            try:
                self._catalog = load_catalog(self.data["catalog"])
            except Exception as e:
                raise SourceError(
                    "Could not load pyiceberg catalog %r (from ~/.pyiceberg.yaml or "
                    "PYICEBERG_CATALOG__%s__* variables): %s"
                    % (self.data["catalog"], self.data["catalog"].upper(), scrub(e, []))
                ) from None
            self.secrets = catalog_secrets(getattr(self._catalog, "properties", {}) or {})
            self.record("load_catalog", time.monotonic() - started)
        return self._catalog

    def record(self, what, seconds, **facts):
        self.requests.append({"request": what, "seconds": round(seconds, 4), **facts})

    def close(self):
        self._catalog = None


def catalog_secrets(properties):
    """The values of a catalog's properties that are secrets, to scrub from messages."""
    return [str(v) for k, v in properties.items() if v and SECRET_PROPERTY_RE.search(str(k))]


def scrub(error, secrets):
    """An exception as one line, without secrets or the password of a URL."""
    text = "%s: %s" % (error.__class__.__name__, " ".join(str(error).split()))
    text = re.sub(r"://([^:/@\s]+):([^@\s]+)@", r"://\1:[redacted]@", text)
    for secret in sorted(set(s for s in secrets if s), key=len, reverse=True):
        text = text.replace(secret, "[redacted]")
    return text


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


def metadata_version(name):
    """The version a metadata file name carries (``00012-<uuid>.metadata.json``,
    ``v12.metadata.json``), or None."""
    match = re.match(r"^v?(\d+)[-.]", name)
    return int(match.group(1)) if match and name.endswith((".metadata.json", ".json.gz")) else None


def newest_metadata(session, data):
    """The key of the newest ``*.metadata.json`` under the location's ``metadata/``, or None."""
    prefix = data["key"] + "metadata/"
    started = time.monotonic()
    best, pages = None, 0
    for page in s3._pages(session, data, prefix, delimiter="/"):
        pages += 1
        for obj in page.get("Contents", ()):
            name = obj["Key"][len(prefix) :]
            version = metadata_version(name)
            if version is None:
                continue
            rank = (version, obj["LastModified"])
            if best is None or rank > best[0]:
                best = (rank, obj["Key"])
    session.record("ListObjectsV2", time.monotonic() - started, pages=pages)
    return None if best is None else best[1]


def read_location_metadata(session, data):
    """The newest metadata document of the location, as a dict, or None."""
    from botocore.exceptions import BotoCoreError, ClientError

    key = newest_metadata(session, data)
    if key is None:
        return None
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
    if body[:2] == b"\x1f\x8b":
        body = gzip.decompress(body)
    try:
        doc = json.loads(body.decode("utf-8"))
    except ValueError:
        raise SourceError(
            "s3://%s/%s is not an Iceberg metadata file (not JSON)" % (data["bucket"], key)
        ) from None
    doc["metadata-location"] = "s3://%s/%s" % (data["bucket"], key)
    return doc


def read_catalog_metadata(session, data):
    """The table's current metadata through the catalog, in the metadata file's shape, or
    None when the table does not exist."""
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
    return {
        "table-uuid": str(meta.table_uuid),
        "current-snapshot-id": meta.current_snapshot_id,
        "metadata-location": table.metadata_location,
        "snapshots": [
            {
                "snapshot-id": s.snapshot_id,
                "parent-snapshot-id": s.parent_snapshot_id,
                "timestamp-ms": s.timestamp_ms,
                "summary": _summary_dict(s.summary),
            }
            for s in meta.snapshots
        ],
    }


def _summary_dict(summary):
    if summary is None:
        return {}
    found = {k: v for k, v in dict(getattr(summary, "additional_properties", {}) or {}).items()}
    operation = getattr(summary, "operation", None)
    found["operation"] = getattr(operation, "value", operation)
    return found


def _operation(snapshot):
    return str((snapshot.get("summary") or {}).get("operation") or "unknown").lower()


def changed_since(snapshots, current_id, previous_id):
    """Whether data changed from snapshot ``previous_id`` to ``current_id``.

    Walks back from ``current_id`` through parents. True when a snapshot on the way changes
    data (any operation but ``replace``), or when ``previous_id`` is not an ancestor (a
    rollback, a re-created table, expired history): nothing can say the data is the same.
    """
    by_id = {s.get("snapshot-id"): s for s in snapshots}
    snapshot_id, seen = current_id, set()
    while snapshot_id is not None and snapshot_id not in seen:
        if snapshot_id == previous_id:
            return False
        seen.add(snapshot_id)
        snapshot = by_id.get(snapshot_id)
        if snapshot is None or _operation(snapshot) not in NO_DATA_CHANGE:
            return True
        snapshot_id = snapshot.get("parent-snapshot-id")
    return True


def _snapshot_rows(snapshots, current_id):
    """The current snapshot's ancestry, newest last (at most ``SNAPSHOTS_SHOWN``), for the
    card: id, operation, time, records added."""
    by_id = {s.get("snapshot-id"): s for s in snapshots}
    rows, snapshot_id = [], current_id
    while snapshot_id in by_id and len(rows) < SNAPSHOTS_SHOWN:
        s = by_id[snapshot_id]
        row = {
            "version": s.get("snapshot-id"),
            "operation": _operation(s),
            "timestamp": s.get("timestamp-ms"),
            "data_change": _operation(s) not in NO_DATA_CHANGE,
        }
        added = (s.get("summary") or {}).get("added-records")
        if added is not None and str(added).isdigit():
            row["rows_added"] = int(added)
        rows.append(row)
        snapshot_id = s.get("parent-snapshot-id")
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
        The previous check's ``Observation.cursor``: the snapshot id it reported.

    Returns
    -------
    Observation
        ``value`` the snapshot id (as text) of the newest snapshot that changed data, counted
        from the previous value (None when the table or its snapshot is missing).
    """
    if "location" in data:
        meta = read_location_metadata(session, data)
    else:
        meta = read_catalog_metadata(session, data)
    current_id = None if meta is None else meta.get("current-snapshot-id")
    if current_id is None or current_id == -1:
        return Observation(None, {"state": "absent", "table": describe(data)}, cursor={})
    snapshots = meta.get("snapshots") or []
    previous = (cursor or {}).get("snapshot_id")
    same_table = (cursor or {}).get("table_uuid") == meta.get("table-uuid")
    value_id = current_id
    if previous is not None and same_table and not changed_since(snapshots, current_id, previous):
        value_id = previous  # only compactions since: the data the previous value names
    current = next((s for s in snapshots if s.get("snapshot-id") == current_id), {})
    summary = {
        "state": "present",
        "table": describe(data),
        "table_version": value_id,
        "table_id": meta.get("table-uuid"),
        "latest_version": current_id,
        "current_operation": _operation(current),
        "commits": _snapshot_rows(snapshots, current_id),
        "payload": {
            "table_version": str(value_id),
            "table_id": str(meta.get("table-uuid") or ""),
            "latest_version": str(current_id),
        },
    }
    next_cursor = {"snapshot_id": value_id, "table_uuid": meta.get("table-uuid")}
    return Observation(str(value_id), summary, cursor=next_cursor)
