"""Hostile variants of a real Iceberg metadata file (issue 19): seeded, bounded, loopback.

Each variant of a metadata file pyiceberg wrote (fields retyped, removed or replaced, lists
for objects, garbage bytes, gzip of garbage, odd file names next to it) is checked as a
sensor would check it, through a table folder (``location``) and, for fewer variants,
through the catalog. Whatever the variant:

- only ``SourceError`` escapes the check;
- no secret (a fake AWS secret key in the environment, a fake catalog password) appears in
  any message, though variants carry them in fields and file names;
- a variant that changes no data (reformatted, keys reordered, unknown keys added, gzip'd,
  stray files beside it) gives the value of the file it came from.
"""

import copy
import gzip
import json
import random
import sqlite3
import uuid

import pytest
from json_paths import at, paths
from test_iceberg_metadata import docs  # noqa: F401 (fixture)
from test_iceberg_source import CATALOG, Sensor, catalog  # noqa: F401 (fixture)

from flowproject.exceptions import SourceError
from flowproject.sources import iceberg

pytest.importorskip("pyiceberg")

SEED = 19
LOCATION_VARIANTS = 100
CATALOG_VARIANTS = 25

AWS_SECRET = "FAKEawsSECRETk3y0123456789+abcdEFGH"
CATALOG_PASSWORD = "FAKEcatPASS@w0rd:9z"
# What must never be shown: the secrets and the pieces a parser could split them into.
NEVER_SHOWN = [AWS_SECRET, CATALOG_PASSWORD, "FAKEcatPASS", "w0rd:9z"]

HOSTILE_VALUES = [
    None,
    True,
    0,
    -1,
    1.5,
    2**70,
    "",
    "12",
    "replace",
    AWS_SECRET,
    CATALOG_PASSWORD,
    [],
    {},
    [1, 2],
    {"operation": "append"},
]


def hostile(rng, doc):
    """``(description, files, same_data)``: files ``{name: bytes}`` for metadata/."""
    doc = copy.deepcopy(doc)
    name = "%05d-%s.metadata.json" % (rng.randint(1, 99), uuid.UUID(int=rng.getrandbits(128)))
    kind = rng.choice(
        [
            "retype",
            "secret",
            "remove",
            "listify",
            "garbage",
            "gzip-garbage",
            "odd-names",
            "same-data",
        ]
    )
    # Mostly fields the check reads, sometimes anything at all.
    read = [
        p
        for p in paths(doc)
        if p
        and (
            p[0] in ("table-uuid", "current-snapshot-id", "snapshots", "metadata-log")
            and (
                len(p) < 3
                or p[2] in ("snapshot-id", "parent-snapshot-id", "timestamp-ms", "metadata-file")
            )
            or p[-1] == "operation"
        )
    ]
    path = rng.choice(read if rng.random() < 0.8 else list(paths(doc))[1:])
    if kind == "retype":
        value = rng.choice(HOSTILE_VALUES)
        at(doc, path[:-1])[path[-1]] = copy.deepcopy(value)
        return "%s := %r" % (path, value), {name: json.dumps(doc).encode()}, False
    if kind == "secret":  # where a parser that quotes its input would show it
        at(doc, path[:-1])[path[-1]] = rng.choice([AWS_SECRET, CATALOG_PASSWORD])
        return "%s := <secret>" % (path,), {name: json.dumps(doc).encode()}, False
    if kind == "remove":
        del at(doc, path[:-1])[path[-1]]
        return "del %s" % (path,), {name: json.dumps(doc).encode()}, False
    if kind == "listify":
        target = at(doc, path[:-1])
        target[path[-1]] = [target[path[-1]]]
        return "%s := [it]" % (path,), {name: json.dumps(doc).encode()}, False
    if kind == "garbage":
        body = json.dumps(doc).encode()
        choice = rng.randrange(4)
        if choice == 0:
            body = bytes(rng.getrandbits(8) for _ in range(rng.randint(0, 300)))
        elif choice == 1:
            body = body[: rng.randint(0, len(body) - 1)]
        elif choice == 2:
            body = b"[" * 100000 + b"]" * 100000  # deeper than json's recursion limit
        else:
            body = json.dumps([doc]).encode()
        return "garbage %d" % choice, {name: body}, False
    if kind == "gzip-garbage":
        body = gzip.compress(json.dumps(doc).encode())
        body = (
            body[: rng.randint(2, len(body) - 1)]
            if rng.random() < 0.5
            else gzip.compress(bytes(rng.getrandbits(8) for _ in range(50)))
        )
        return "gzip garbage", {name.replace(".metadata", ".gz.metadata"): body}, False
    if kind == "odd-names":
        files = {name: json.dumps(doc).encode()}
        for odd in [
            "99999999999-z.metadata.json",
            "%s.metadata.json" % uuid.UUID(int=rng.getrandbits(128)),
            "v1-%s.metadata.json" % AWS_SECRET,
            "00099-not-a-uuid.metadata.json",
            "v007.metadata.json",
            "%s.metadata.json" % AWS_SECRET,
            "version-hint.txt",
        ]:
            if rng.random() < 0.6:
                files[odd] = rng.choice([b"[]", b"\x1f\x8bjunk", b"{", json.dumps(doc).encode()])
        return "odd names %s" % sorted(files), files, True
    # Same data: reformatted, keys reordered, unknown keys, optional parts dropped, gzip'd.
    doc["x-unknown"] = {"nested": [1, "two"]}
    for snapshot in doc["snapshots"]:
        snapshot["x-extra"] = rng.choice(HOSTILE_VALUES[:9])
        snapshot["summary"]["x-extra-property"] = "1"
    rng.shuffle(doc["snapshots"])
    for optional in ("snapshot-log", "metadata-log", "statistics", "refs"):
        if rng.random() < 0.5:
            doc.pop(optional, None)
    items = list(doc.items())
    rng.shuffle(items)
    body = json.dumps(dict(items), indent=rng.choice([None, 1, 4])).encode()
    if rng.random() < 0.5:
        return (
            "same data, gzip",
            {name.replace(".metadata", ".gz.metadata"): gzip.compress(body)},
            True,
        )
    return "same data", {name: body}, True


def outcome(data):
    """The value a check of ``data`` finds, or its SourceError's message; any other
    exception fails the test."""
    try:
        with iceberg.open_session(data) as session:
            return iceberg.check(data, session).value, None
    except SourceError as e:
        return None, str(e)


def assert_hides_secrets(message, description):
    for secret in NEVER_SHOWN:
        assert message is None or secret not in message, (description, message)


@pytest.fixture
def secrets_in_env(catalog, monkeypatch):
    import pyiceberg.catalog
    from pyiceberg.utils.config import Config

    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", AWS_SECRET)  # moto accepts any key
    monkeypatch.setenv("PYICEBERG_CATALOG__LAKE__PASSWORD", CATALOG_PASSWORD)
    monkeypatch.setattr(pyiceberg.catalog, "_ENV_CONFIG", Config())


def test_hostile_metadata_in_a_table_folder(docs, secrets_in_env, s3_client, bucket):
    rng = random.Random(SEED)
    original = docs[2]
    seen = {"error": 0, "value": 0}
    for i in range(LOCATION_VARIANTS):
        description, files, same_data = hostile(rng, original)
        folder = "fuzz/%d" % i
        for name, body in files.items():
            s3_client.put_object(Bucket=bucket, Key="%s/metadata/%s" % (folder, name), Body=body)
        data = Sensor(location="s3://%s/%s" % (bucket, folder)).config["data"]
        value, message = outcome(data)
        seen["error" if message else "value"] += 1
        seen["same data"] = seen.get("same data", 0) + same_data
        assert_hides_secrets(message, description)
        if same_data:
            assert value == str(original["current-snapshot-id"]), (description, message)
    # Every kind of outcome was exercised (seed 19: 50 errors, 50 values, 31 same data).
    assert seen["error"] > 20 and seen["value"] > 20 and seen["same data"] > 20, seen


def test_hostile_metadata_behind_a_catalog(docs, secrets_in_env, s3_client, bucket, tmp_path):
    rng = random.Random(SEED + 1)
    original = docs[2]
    data = Sensor(table="db.events", catalog=CATALOG).config["data"]
    database = sqlite3.connect(str(tmp_path / "catalog.db"))
    seen = {"error": 0, "value": 0}
    for i in range(CATALOG_VARIANTS):
        description, files, same_data = hostile(rng, original)
        name, body = next(iter(files.items()))  # the catalog points at one file
        key = "fuzz-catalog/%d/%s" % (i, name)
        s3_client.put_object(Bucket=bucket, Key=key, Body=body)
        with database:
            database.execute(
                "UPDATE iceberg_tables SET metadata_location = ? WHERE table_name = 'events'",
                ("s3://%s/%s" % (bucket, key),),
            )
        value, message = outcome(data)
        seen["error" if message else "value"] += 1
        seen["same data"] = seen.get("same data", 0) + same_data
        assert_hides_secrets(message, description)
        if same_data:
            assert value == str(original["current-snapshot-id"]), (description, message)
    database.close()
    # Seed 20: 17 errors, 8 values, 3 same data.
    assert seen["error"] > 3 and seen["value"] > 3 and seen["same data"] >= 3, seen
