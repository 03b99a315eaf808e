"""Reading an Iceberg table's metadata folder without a catalog: which file is current, and
what a metadata document says about snapshots, checked field by field.

Which file of ``metadata/`` is current follows Iceberg's own rules:

- Names. A metadata file is named ``v<N>.metadata.json`` (Hadoop tables: Java's
  ``HadoopTableOperations``) or ``<NNNNN>-<uuid>.metadata.json`` (tables of a metastore
  catalog: at least five digits, then a UUID), each also gzip-compressed as
  ``*.gz.metadata.json`` or, in older writers, ``*.metadata.json.gz``. Any other name is
  ignored: Hadoop's temporary ``<uuid>.metadata.json`` written before its rename, a copy
  named ``v3-backup.metadata.json``, a stray ``99999999999-z.metadata.json``.
- ``version-hint.text``, when present and holding a number N, names the current version of
  a Hadoop table: ``v<N>`` is current, or ``v<N+1>``, ``v<N+2>``... while they exist (the
  hint is written after the metadata file, so it may lag one commit behind; Java reads it
  the same way). A hint naming a version without a file is an error; a hint that is not a
  number is ignored, as Java does.
- Otherwise the highest version number wins, ``v<N>`` names first (a Hadoop folder), then
  ``<NNNNN>-<uuid>`` names; two files with the same number (a commit that lost a race left
  its file behind) are told apart by their last-modified time, then by name. Only the
  catalog knows which of those two was committed: a sensor on a catalog's table should name
  the table (``table`` and ``catalog``), not its folder.

Every field the check reads (``table-uuid``, ``current-snapshot-id``, each snapshot's
``snapshot-id``, ``parent-snapshot-id``, ``timestamp-ms``, ``summary.operation``, and each
``metadata-log`` entry's ``metadata-file``) is checked
for its type before use; anything else is a ``SourceError`` naming the file and the field.
"""

import gzip
import json
import re
import zlib

from ..exceptions import SourceError
from ..schema_check import is_integer, json_type

VERSION_HINT = "version-hint.text"

_EXTENSIONS = r"(?:\.metadata\.json|\.gz\.metadata\.json|\.metadata\.json\.gz)"
# Java's Integer.parseInt reads "v01", but then looks for "v1.metadata.json": no leading 0.
HADOOP_NAME_RE = re.compile(r"^v(0|[1-9][0-9]*)%s$" % _EXTENSIONS)
CATALOG_NAME_RE = re.compile(
    r"^([0-9]{5,})-[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"
    r"%s$" % _EXTENSIONS
)

# The hint is a number; anything longer is not a hint.
HINT_MAX_BYTES = 64


def metadata_name_version(name):
    """``("hadoop", N)`` for ``v<N>.metadata.json``, ``("catalog", N)`` for
    ``<NNNNN>-<uuid>.metadata.json`` (and their gzip forms), None for any other name."""
    match = HADOOP_NAME_RE.match(name)
    if match:
        return "hadoop", int(match.group(1))
    match = CATALOG_NAME_RE.match(name)
    if match:
        return "catalog", int(match.group(1))
    return None


def hint_version(body):
    """The version a ``version-hint.text`` body names, or None when it is not a number."""
    if not isinstance(body, bytes) or len(body) > HINT_MAX_BYTES:
        return None
    lines = body.decode("ascii", "replace").splitlines()
    text = lines[0].strip() if lines else ""
    return int(text) if re.match(r"^[0-9]{1,10}$", text) else None


def choose_metadata(files, read_hint):
    """The name of the current metadata file among ``files``, or None.

    Parameters
    ----------
    files : dict
        ``{name: last-modified}`` of the files directly under ``metadata/``.
    read_hint : callable
        Returns the bytes of ``version-hint.text`` (called only when it is listed).

    Returns
    -------
    str or None
    """
    hadoop, catalog = {}, []
    for name, modified in files.items():
        found = metadata_name_version(name)
        if found is None:
            continue
        if found[0] == "hadoop":
            hadoop.setdefault(found[1], []).append(name)
        else:
            catalog.append(((found[1], modified, name), name))
    if hadoop and VERSION_HINT in files:
        version = hint_version(read_hint())
        if version is not None:
            if version not in hadoop:
                raise SourceError(
                    "metadata/%s names version %d, but there is no metadata/v%d.metadata.json"
                    % (VERSION_HINT, version, version)
                )
            while version + 1 in hadoop:
                version += 1
            return _hadoop_file(hadoop[version])
    if hadoop:
        return _hadoop_file(hadoop[max(hadoop)])
    if catalog:
        return max(catalog)[1]
    return None


def _hadoop_file(names):
    """Of the files of one version, the one Java reads: plain, then ``.gz.metadata.json``,
    then ``.metadata.json.gz``."""

    def rank(name):
        if name.endswith(".gz.metadata.json"):
            return 1
        return 2 if name.endswith(".gz") else 0

    return min(names, key=lambda name: (rank(name), name))


def parse_metadata(body, where):
    """The JSON object of a metadata file's bytes (gzip'd or not).

    Parameters
    ----------
    body : bytes
    where : str
        The file, for messages.

    Returns
    -------
    dict
    """
    if body[:2] == b"\x1f\x8b":
        try:
            body = gzip.decompress(body)
        except (OSError, EOFError, zlib.error) as e:
            raise SourceError(
                "%s is not an Iceberg metadata file (not readable gzip: %s)"
                % (where, e.__class__.__name__)
            ) from None
    try:
        doc = json.loads(body.decode("utf-8"))
    except (ValueError, RecursionError):
        raise SourceError("%s is not an Iceberg metadata file (not JSON)" % where) from None
    if not isinstance(doc, dict):
        raise SourceError(
            "%s is not an Iceberg metadata file (a JSON %s, not an object)"
            % (where, _json_type(doc))
        )
    return doc


def _json_type(value):
    """``json_type`` in this module's words: any number is a number, an array a list."""
    found = json_type(value)
    return {"integer": "number", "array": "list"}.get(found, found)


def _wrong(where, field, expected, value):
    # A number is shown as the file has it; a string only as "a string": a message never
    # quotes text of the file, which could be anything (a secret cut short by truncation
    # could not be redacted).
    if isinstance(value, (int, float)):
        shown = json.dumps(value)[:40]
    else:
        shown = {"string": "a string", "list": "a list", "object": "an object"}.get(
            _json_type(value), _json_type(value)
        )
    return SourceError("%s: field %s: expected %s, found %s" % (where, field, expected, shown))


_is_long = is_integer


def _optional_long(doc, key, where, field):
    value = doc.get(key)
    if value is not None and not _is_long(value):
        raise _wrong(where, field, "an integer", value)
    return value


def table_snapshots(doc, where):
    """What the check needs from a metadata document, every field checked for its type.

    Parameters
    ----------
    doc : dict
        A metadata file's JSON object (or the catalog's metadata in that shape).
    where : str
        The metadata file, for messages.

    Returns
    -------
    dict
        ``table_uuid`` (str or None), ``current_id`` (int, or None without a current
        snapshot), ``snapshots`` (``{id: {"parent", "operation", "timestamp", "summary"}}``),
        ``order`` (the ids in the file's order), ``previous_files`` (the ``metadata-log``,
        newest first).
    """
    uuid = doc.get("table-uuid")
    if uuid is not None and not isinstance(uuid, str):
        raise _wrong(where, "table-uuid", "a string", uuid)
    current_id = _optional_long(doc, "current-snapshot-id", where, "current-snapshot-id")
    if current_id == -1:  # format v1 says "no current snapshot" with -1
        current_id = None
    listed = doc.get("snapshots")
    if listed is None:
        listed = []
    if not isinstance(listed, list):
        raise _wrong(where, "snapshots", "a list", listed)
    snapshots, order = {}, []
    for i, entry in enumerate(listed):
        field = "snapshots[%d]" % i
        if not isinstance(entry, dict):
            raise _wrong(where, field, "an object", entry)
        snapshot_id = entry.get("snapshot-id")
        if not _is_long(snapshot_id):
            raise _wrong(where, field + ".snapshot-id", "an integer", snapshot_id)
        if snapshot_id in snapshots:
            raise SourceError(
                "%s: field %s.snapshot-id: snapshot %d is listed twice"
                % (where, field, snapshot_id)
            )
        parent = _optional_long(entry, "parent-snapshot-id", where, field + ".parent-snapshot-id")
        timestamp = _optional_long(entry, "timestamp-ms", where, field + ".timestamp-ms")
        summary = entry.get("summary")
        if summary is None:
            summary = {}  # optional in format v1
        if not isinstance(summary, dict):
            raise _wrong(where, field + ".summary", "an object", summary)
        operation = summary.get("operation")
        if operation is not None and not isinstance(operation, str):
            raise _wrong(where, field + ".summary.operation", "a string", operation)
        snapshots[snapshot_id] = {
            "parent": parent,
            "operation": (operation or "unknown").lower(),
            "timestamp": timestamp,
            "summary": summary,
        }
        order.append(snapshot_id)
    previous = doc.get("metadata-log")
    if previous is None:
        previous = []
    if not isinstance(previous, list):
        raise _wrong(where, "metadata-log", "a list", previous)
    previous_files = []
    for i, entry in enumerate(previous):
        field = "metadata-log[%d]" % i
        if not isinstance(entry, dict):
            raise _wrong(where, field, "an object", entry)
        if not isinstance(entry.get("metadata-file"), str):
            raise _wrong(where, field + ".metadata-file", "a string", entry.get("metadata-file"))
        previous_files.append(entry["metadata-file"])
    if current_id is not None and current_id not in snapshots:
        raise SourceError(
            "%s: field current-snapshot-id: snapshot %d is not in snapshots" % (where, current_id)
        )
    return {
        "table_uuid": uuid,
        "current_id": current_id,
        "snapshots": snapshots,
        "order": order,
        # Newest first: where expired snapshots may still be read.
        "previous_files": list(reversed(previous_files)),
    }
