"""What changed in an announcement, for the flow it starts: a manifest, streamed.

An event payload is the wrong carrier for a list of files (Argo Events over NATS caps a
message at 1 MiB). The announcing run writes the objects added, modified and removed since the
last announcement once, as a gzip'd JSON-lines object in the datastore (the storage of the
sensor state), named by the SHA-256 of its content:

    <datastore root>/<SensorFlow>/sensor_changes/<sha256>.jsonl.gz

and the event carries ``changes_url`` (its location) and ``changes_count`` (its object
records). ``@sensor_trigger`` maps ``changes_url`` to a Parameter, and
``self.sensor_changes()`` in the triggered flow streams it: one line at a time, in flat
memory, whatever its size.

The first line is a header, the rest one record per object::

    {"kind": "changes", "complete": true, "source": "default", "change_id": "...",
     "bucket": "my-bucket", "prefix": "events/", "added": 2, "modified": 0, "removed": 1, ...}
    {"kind": "added", "key": "events/part-7.parquet", "size": 1024, "etag": "...",
     "last_modified": "2026-05-01T12:00:00+00:00"}

Header kinds: ``changes`` (the diff against the previous announcement's listing, with the
include/exclude filters applied, as the sensor lists); ``first_check`` (no previous listing:
the first check of a branch, or a baseline recovered without one) and ``forced``
(``--force-trigger``): everything is to be processed, so every object under the prefix is
listed as ``added`` when there are at most ``LIST_EVERYTHING_UP_TO`` (10,000) of them
(``complete: true``), else none is and ``complete`` is false: read the whole prefix.

A Delta table's manifest (``delta_manifest``) lists the data files the commits after the
previous announced version added and removed (``dataChange`` actions only: a compaction's files
are left out), each record with its ``version``; the header and the payload carry the range,
``from_version`` (exclusive) to ``to_version``. A first check, a re-created table and
``--force-trigger`` have no range (``from_version`` None, "" in the payload): read the table at
``to_version``. An Iceberg table's manifest (``iceberg_manifest``) carries the snapshot range
alone, for an incremental scan. A Snowflake query's announcement has no manifest: its payload
carries the previous and the new value, which a query template can bound (``WHERE updated_at >
'{previous_value}'``).
"""

import contextlib
import gzip
import hashlib
import io
import json
import os
import sys
import tempfile
from collections import namedtuple

from .exceptions import FlowprojectException

# A first check or a forced announcement lists every object up to this many; beyond, the
# manifest says "everything" (header ``complete: false``) instead of listing the world.
LIST_EVERYTHING_UP_TO = 10_000

ObjectChange = namedtuple("ObjectChange", "kind key size etag last_modified url")
ObjectChange.__doc__ = """One object of a manifest: ``kind`` (added, modified, removed), its S3
``key``, ``size``, ``etag``, ``last_modified`` (ISO text) and ``url`` (``s3://bucket/key``).
For a removed object, what it was."""


def manifest_path(flow_name, digest):
    """Key of a manifest relative to the datastore root."""
    return "%s/sensor_changes/%s.jsonl.gz" % (flow_name, digest)


# ------------------------------------------------------------------ the announcing run


_quote = json.encoder.encode_basestring  # JSON string of a str, in C where available


def _record(kind, prefix, relative, rest):
    """One object's manifest line (JSON, keys sorted), formatted directly: 100,000 of them
    are written by the announcing run, and ``json.dumps`` of a dict each is 3x slower."""
    size, _, rest = rest.partition("\t")
    last_modified, _, etag = rest.partition("\t")
    return '{"etag":%s,"key":%s,"kind":"%s","last_modified":%s,"size":%s}' % (
        _quote(etag),
        _quote(prefix + relative),
        kind,
        _quote(last_modified),
        size if size.isdigit() else "null",
    )


def listing_records(previous, current, prefix, everything=False):
    """The object records of a manifest, in key order, and the counts by kind.

    Parameters
    ----------
    previous : dict or None
        The previous announcement's listing (``s3_listing.parse_listing``).
    current : dict
        This announcement's listing.
    prefix : str
        The watched prefix, prepended to the listings' relative keys.
    everything : bool
        List every object of ``current`` as added (a first check or a forced announcement).

    Returns
    -------
    tuple
        ``(records, counts)``: an iterator of JSON lines (made as they are written) and
        ``{"added", "modified", "removed"}``.
    """
    base = {} if everything or previous is None else previous
    kinds = []
    for key in sorted(set(current) | set(base)):
        now, before = current.get(key), base.get(key)
        if before is None:
            kinds.append(("added", key, now))
        elif now is None:
            kinds.append(("removed", key, before))
        elif now != before:
            kinds.append(("modified", key, now))
    counts = {"added": 0, "modified": 0, "removed": 0}
    for kind, _key, _rest in kinds:
        counts[kind] += 1
    records = (_record(kind, prefix, key, rest) for kind, key, rest in kinds)
    return records, counts


def write_manifest(storage, flow_name, header, records):
    """Write a manifest (header line, then one line per record) once; return its URL.

    The object is named by the SHA-256 of its uncompressed lines, so announcing the same
    changes again names the same object, and an existing one is not written again.

    Parameters
    ----------
    storage : DataStoreStorage
        ``state.datastore_storage``: local or S3 (others through Metaflow's storage layer).
    flow_name : str
        The announcing flow.
    header : dict
    records : iterable of dict or str
        A str is a record already encoded as one line of JSON.

    Returns
    -------
    str
        The manifest's URL (a local path or ``s3://...``).
    """
    encode = json.JSONEncoder(separators=(",", ":"), sort_keys=True).encode
    digest = hashlib.sha256()
    handle, spool = tempfile.mkstemp(prefix="flowproject-changes-", suffix=".jsonl.gz")
    os.close(handle)
    try:
        with gzip.open(spool, "wb", compresslevel=5) as out:
            chunk = [encode(header)]
            for record in records:
                chunk.append(record if isinstance(record, str) else encode(record))
                if len(chunk) >= _CHUNK:
                    _write_lines(chunk, digest, out)
                    chunk = []
            _write_lines(chunk, digest, out)
        path = manifest_path(flow_name, digest.hexdigest())
        url = storage.full_uri(path)
        kind = getattr(storage, "TYPE", None)
        if kind == "local":
            if not os.path.exists(url):
                os.makedirs(os.path.dirname(url), exist_ok=True)
                os.replace(spool, url)
        elif kind == "s3":
            from metaflow.metaflow_config import S3_SERVER_SIDE_ENCRYPTION

            from .state import metaflow_s3_client

            client, _error = metaflow_s3_client()
            bucket, _, key = url[len("s3://") :].partition("/")
            extra = {"ContentType": "application/gzip"}
            if S3_SERVER_SIDE_ENCRYPTION:  # as Metaflow's own S3 writes
                extra["ServerSideEncryption"] = S3_SERVER_SIDE_ENCRYPTION
            client.upload_file(spool, bucket, key, ExtraArgs=extra)
        else:
            with open(spool, "rb") as f:
                storage.save_bytes([(path, f)], overwrite=True)
        return url
    finally:
        if os.path.exists(spool):
            os.unlink(spool)


# Lines encoded, hashed and compressed together.
_CHUNK = 2000


def _write_lines(lines, digest, out):
    if lines:
        data = ("\n".join(lines) + "\n").encode("utf-8")
        digest.update(data)
        out.write(data)


def s3_manifest(check):
    """``(url, count, {})`` of the manifest of an S3 ``files_metadata`` announcement, or None.

    Called by ``SourceCheck.announce`` before it publishes: the listing this run stored
    (``listings`` of its ``start`` step) against the one the baseline's run stored.
    """
    from .sources.s3_listing import unpack_listing
    from .state import load_listing

    data, decision = check.data, check.decision
    if data.get("type") != "s3" or data.get("check_mode") != "files_metadata":
        return None
    packed = load_listing(check.run, source=check.name)
    if packed is None:
        return None
    current = unpack_listing(packed)
    previous = None
    if decision.kind != "forced" and decision.baseline_run:
        stored = load_listing(decision.baseline_run, source=check.name)
        previous = None if stored is None else unpack_listing(stored)
    kind = "forced" if decision.kind == "forced" else "changes"
    if previous is None and kind == "changes":
        kind = "first_check"
    everything = kind != "changes"
    complete = not everything or len(current) <= LIST_EVERYTHING_UP_TO
    prefix = data["key"]
    if complete:
        records, counts = listing_records(previous, current, prefix, everything)
    else:
        records, counts = iter(()), {"added": len(current), "modified": 0, "removed": 0}
    header = dict(
        kind=kind,
        complete=complete,
        source=check.name,
        change_id=decision.change_id,
        bucket=data["bucket"][len("s3://") :].split("/")[0],
        prefix=prefix,
        objects=len(current),
        list_everything_up_to=LIST_EVERYTHING_UP_TO,
        **counts,
    )
    url = write_manifest(check.store.storage, check.flow_name, header, records)
    return url, sum(counts.values()) if complete else 0, {}


def _previous_version(previous_value, table_id):
    """The table version in a previous Delta value ``"<version>@<table id>"`` of the same
    table, or None (no previous value, or the table was re-created since)."""
    if not previous_value or "@" not in previous_value:
        return None
    version, _, previous_id = previous_value.partition("@")
    if not version.isdigit() or (table_id and previous_id != table_id):
        return None
    return int(version)


def _millis_text(millis):
    from datetime import datetime, timezone

    try:
        return datetime.fromtimestamp(int(millis) / 1000, timezone.utc).isoformat()
    except (TypeError, ValueError):
        return None


def delta_commit_records(text, version):
    """The data files a Delta commit added and removed, as manifest records.

    Only actions with ``dataChange: true``: the files of a compaction (OPTIMIZE) hold rows
    that were there already, and a consumer reading new rows must not read them again.
    """
    for line in text.splitlines():
        if not line.strip():
            continue
        action = json.loads(line)
        for name, kind in (("add", "added"), ("remove", "removed")):
            found = action.get(name)
            if isinstance(found, dict) and found.get("dataChange", True):
                yield {
                    "kind": kind,
                    "key": found.get("path"),
                    "size": found.get("size"),
                    "last_modified": _millis_text(
                        found.get("modificationTime") or found.get("deletionTimestamp")
                    ),
                    "etag": None,
                    "version": version,
                }


def delta_range_records(session, data, from_version, to_version):
    """``(records, complete)``: the data files the commits after ``from_version`` up to
    ``to_version`` added and removed, in order, each commit read as a check reads the log
    (many at once: one at a time, a backlog of commits would cost a round trip each).
    ``([], False)`` when one of the commits was cleaned up: the range cannot be listed."""
    from .sources import delta

    def commit_records(session, data, version):
        body = delta._get(session, data, delta.commit_name(version))
        return None if body is None else list(delta_commit_records(body.decode("utf-8"), version))

    versions = list(range(from_version + 1, to_version + 1))
    records = []
    for each in delta.read_each_commit(session, data, versions, commit_records):
        if each is None:
            return [], False
        records.extend(each)
    return records, True


def delta_manifest(check):
    """``(url, count, range)`` of a Delta announcement's manifest: the data files added and
    removed by the commits after the previous announced version up to the new one.

    The header carries ``table``, ``table_id``, ``from_version`` (exclusive; None on a first
    check, after a re-created table and for ``--force-trigger``: read the table at
    ``to_version``) and ``to_version``. Commits already cleaned from the log make the
    manifest incomplete (``complete: false``).
    """
    from .sources import delta

    data = delta.normalize(check.data)
    summary, decision = check.observation.summary, check.decision
    if summary.get("table_version") is None:
        return None
    to_version = int(summary["table_version"])
    table_id = summary.get("table_id")
    from_version = None
    if decision.kind != "forced":
        from_version = _previous_version(decision.previous_value, table_id)
    kind = "forced" if decision.kind == "forced" else "changes"
    if from_version is None and kind == "changes":
        kind = "first_check"
    records, complete = [], from_version is not None
    if complete and to_version - from_version > LIST_EVERYTHING_UP_TO:
        complete = False  # a range of more commits than this is read as a whole table
    if complete:
        with delta.open_session(data) as session:
            records, complete = delta_range_records(session, data, from_version, to_version)
    counts = {"added": 0, "modified": 0, "removed": 0}
    for record in records:
        counts[record["kind"]] += 1
    header = dict(
        kind=kind,
        complete=complete,
        source=check.name,
        change_id=decision.change_id,
        table=data["uri"],
        table_id=table_id,
        from_version=from_version,
        to_version=to_version,
        **counts,
    )
    url = write_manifest(check.store.storage, check.flow_name, header, records)
    return url, len(records), {"from_version": from_version, "to_version": to_version}


def iceberg_manifest(check):
    """``(url, 0, range)`` of an Iceberg announcement's manifest: its header carries the
    snapshot range, ``from_version`` (the previously announced snapshot id, exclusive; None on a
    first check and for ``--force-trigger``) to ``to_version`` (the announced one). It lists no
    files (``complete: false``): an incremental scan of the range reads the data files the
    append snapshots in it added (examples/table_version_flow.py)."""
    decision = check.decision
    to_version = check.observation.value
    if to_version is None or not str(to_version).lstrip("-").isdigit():
        return None
    previous = decision.previous_value
    from_version = None
    if decision.kind != "forced" and previous and str(previous).lstrip("-").isdigit():
        from_version = int(previous)
    kind = "forced" if decision.kind == "forced" else "changes"
    if from_version is None and kind == "changes":
        kind = "first_check"
    header = dict(
        kind=kind,
        complete=False,
        source=check.name,
        change_id=decision.change_id,
        table=check.data.get("location") or check.data.get("table"),
        from_version=from_version,
        to_version=int(to_version),
        added=0,
        modified=0,
        removed=0,
    )
    url = write_manifest(check.store.storage, check.flow_name, header, ())
    return url, 0, {"from_version": from_version, "to_version": int(to_version)}


def announcement_manifest(check):
    """The manifest of ``check``'s announcement, for its payload: ``{"changes_url",
    "changes_count"}``, or ``{}`` when the source kind has none. A manifest that cannot be
    written is said and left out: the event is published all the same, and the triggered
    run's ``sensor_changes()`` then says it does not know what changed."""
    import time

    kind = check.data.get("type")
    started = time.monotonic()
    try:
        if kind == "delta":
            made = delta_manifest(check)
        elif kind == "iceberg":
            made = iceberg_manifest(check)
        else:
            made = s3_manifest(check)
    except Exception as e:  # never hold back the event for its manifest
        check.say(
            "Warning: the changes manifest was not written (%s: %s); the event goes without "
            "changes_url" % (e.__class__.__name__, e),
            sys.stderr,
        )
        return {}
    if made is None:
        return {}
    url, count, versions = made
    check.say(
        "Changes manifest: %d objects listed, %s (%.2f s)"
        % (count, url, time.monotonic() - started)
    )
    fields = {"changes_url": url, "changes_count": count}
    for name, value in versions.items():  # a table's range: "" for "from the beginning"
        fields[name] = "" if value is None else str(value)
    return fields


# ------------------------------------------------------------------ the triggered run


class Changes(object):
    """What changed in the announcement a run was started for; iterate to stream it.

    Parameters
    ----------
    url : str
        The manifest's ``changes_url`` ("" when there is none: a run started by hand, or a
        source kind without manifests).

    Attributes
    ----------
    header : dict
        The manifest's first line (``{}`` without a manifest).
    kind : str
        ``changes``, ``first_check``, ``forced``, or ``none`` without a manifest.
    complete : bool
        True when iterating yields every object to process; False: the manifest does not
        list them (none, or more than ``LIST_EVERYTHING_UP_TO`` on a first check): process
        the whole prefix.
    """

    def __init__(self, url):
        self.url = url or ""
        self.header = self._read_header() if self.url else {}
        self.kind = self.header.get("kind", "none")
        self.complete = bool(self.header.get("complete", False))

    @property
    def versions(self):
        """``(from_version, to_version)`` of a table's announcement (from exclusive; None:
        from the beginning), or None for a source without versions."""
        if "to_version" not in self.header:
            return None
        return self.header.get("from_version"), self.header["to_version"]

    def __len__(self):
        if not self.complete:
            return 0
        return sum(self.header.get(k, 0) for k in ("added", "modified", "removed"))

    @contextlib.contextmanager
    def _open(self):
        """The manifest's lines, decompressed as they are read (S3: a streamed GET)."""
        if self.url.startswith("s3://"):
            from .state import metaflow_s3_client

            client, _error = metaflow_s3_client()
            bucket, _, key = self.url[len("s3://") :].partition("/")
            raw = client.get_object(Bucket=bucket, Key=key)["Body"]
        else:
            raw = open(self.url.removeprefix("file://"), "rb")
        try:
            yield io.TextIOWrapper(gzip.GzipFile(fileobj=raw), encoding="utf-8")
        finally:
            raw.close()

    def _read_header(self):
        with self._open() as lines:
            return json.loads(next(lines))

    def __iter__(self):
        if not self.url:
            return
        bucket, table = self.header.get("bucket"), self.header.get("table")
        with self._open() as lines:
            next(lines)  # the header
            for line in lines:
                doc = json.loads(line)
                key = doc.get("key")
                yield ObjectChange(
                    doc.get("kind"),
                    key,
                    doc.get("size"),
                    doc.get("etag"),
                    doc.get("last_modified"),
                    _object_url(bucket, table, key),
                )

    def __repr__(self):
        return "Changes(kind=%r, complete=%r, %d objects, %r)" % (
            self.kind,
            self.complete,
            len(self),
            self.url,
        )


def _object_url(bucket, table, key):
    """Where a record's object is: ``s3://bucket/key``, or a table's file under its root."""
    from urllib.parse import unquote

    if not key or "://" in key:
        return key
    if bucket:
        return "s3://%s/%s" % (bucket, key)
    if table:
        return "%s/%s" % (table.rstrip("/"), unquote(key))
    return key


class UnknownSource(FlowprojectException):
    """``sensor_changes(source=...)`` names a source the flow does not wait for."""

    headline = "No such source"


def sensor_changes(flow, source=None):
    """What changed in the announcement that started ``flow`` (see ``Changes``).

    ``@sensor_trigger`` makes this ``self.sensor_changes(source=None)`` of the flows it
    decorates.

    Parameters
    ----------
    flow : FlowSpec
        The running flow, decorated with ``@sensor_trigger``.
    source : str, optional
        Which source's announcement, when the flow waits for several.

    Returns
    -------
    Changes
        Iterate it for ``ObjectChange`` records, streamed from the manifest.
    """
    params = getattr(flow, "_sensor_changes_params", None) or {}
    if source is None:
        if len(params) != 1:
            raise UnknownSource(
                "sensor_changes(): the flow waits for %s; name one: source=%s"
                % (", ".join(params) or "no source", " or ".join(map(repr, params)) or "...")
            )
        (source,) = params
    if source not in params:
        raise UnknownSource(
            "sensor_changes(source=%r): the flow waits for %s"
            % (source, ", ".join(map(repr, params)) or "no source (use @sensor_trigger)")
        )
    return Changes(getattr(flow, params[source], "") or "")


__all__ = [
    "LIST_EVERYTHING_UP_TO",
    "Changes",
    "ObjectChange",
    "UnknownSource",
    "announcement_manifest",
    "listing_records",
    "sensor_changes",
    "write_manifest",
]
