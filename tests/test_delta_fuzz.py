"""Fuzzing the Delta source with hostile variants of a real log (issue 19).

A log written by ``deltalake`` (appends, a compaction, a property change, a checkpoint) is
edited one file at a time, seeded and bounded: a commit's line truncated, a field replaced by
a value of another type, removed, or the whole action retyped; the checkpoint replaced by
garbage; ``_last_checkpoint`` replaced by anything. Each variant is checked without a cursor
and from a cursor before the last commits. Whatever the variant:

- only ``SourceError`` (``SourceIncomplete`` included) escapes a check;
- no message, summary or cursor holds the (fake) AWS secret key or session token;
- a variant that cannot change the data (a field the value does not depend on, or
  ``_last_checkpoint``) leaves the value unchanged and does not fail.
"""

import json
import random

import pytest
from json_paths import paths
from test_delta_source import Table, config_text

from flowproject.config import parse_flowconfig
from flowproject.exceptions import SourceError
from flowproject.sources import delta

pa = pytest.importorskip("pyarrow")
deltalake = pytest.importorskip("deltalake")

SECRET = "fuzzSecretKey+9Zq/NotARealKeyButLooksLikeOne0123"
TOKEN = "fuzzSessionToken/IQoJb3JpZ2luX2VjEHoaCXVzLWVhc3QtMSJH"
VARIANTS = 40
LOG = "tables/events/_delta_log/"

# Fields the value depends on (see delta_log): editing them may change the value or fail.
VALUE_FIELDS = ("metaData", "add", "remove", "cdc")


@pytest.fixture(autouse=True)
def s3_endpoint(s3_server, monkeypatch):
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", s3_server.endpoint_url)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIAFUZZFUZZFUZZFUZZ")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET)
    monkeypatch.setenv("AWS_SESSION_TOKEN", TOKEN)
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")


def random_value(rng):
    return rng.choice(
        [
            None,
            True,
            0,
            -5,
            10**30,
            1.5,
            float("nan"),
            "",
            "x",
            "[1]",
            '{"numRecords": -1}',
            [],
            [1, {"a": 2}],
            {},
            {"id": 7},
            "\u0000\u202e",
            "a" * 5000,
        ]
    )


def edit(value, path, how, rng):
    """``value`` with the item at ``path`` replaced (``how == "replace"``) or removed."""
    if not path:
        return random_value(rng)
    head, rest = path[0], path[1:]
    copy = dict(value) if isinstance(value, dict) else list(value)
    if rest:
        copy[head] = edit(copy[head], rest, how, rng)
    elif how == "remove":
        del copy[head]
    else:
        copy[head] = random_value(rng)
    return copy


def changes_value(action, path):
    """Whether editing ``path`` of ``action`` may change the value (or fail the check)."""
    if not path:
        return True  # the whole action retyped
    kind = path[0]
    if kind not in VALUE_FIELDS:
        return False  # commitInfo, protocol, txn...: not read for the value
    if kind == "add" and len(path) > 1 and path[1] == "stats":
        return False
    if kind == "metaData":
        return len(path) < 2 or path[1] == "id"
    return len(path) < 2 or path[1] == "dataChange"


def mutate_commit(rng, text):
    """``(new text, may change the value)`` for one edit of one line of a commit."""
    lines = [line for line in text.splitlines() if line.strip()]
    number = rng.randrange(len(lines))
    how = rng.choice(["truncate", "replace", "replace", "remove", "retype"])
    if how == "truncate":
        lines[number] = lines[number][: rng.randrange(1, len(lines[number]))]
        changed = True
    elif how == "retype":
        lines[number] = json.dumps(random_value(rng))
        changed = True
    else:
        action = json.loads(lines[number])
        path = rng.choice([p for p in paths(action) if p])
        lines[number] = json.dumps(edit(action, path, how, rng))
        changed = changes_value(action, path)
    return "\n".join(lines) + "\n", changed


def mutate_checkpoint(rng, body):
    how = rng.choice(["garbage", "truncated", "empty", "other parquet"])
    if how == "garbage":
        return bytes(rng.randrange(256) for _ in range(rng.randrange(1, 200)))
    if how == "truncated":
        return body[: rng.randrange(1, len(body))]
    if how == "empty":
        return b""
    import io

    import pyarrow.parquet as pq

    out = io.BytesIO()
    column = rng.choice([pa.array(["x"]), pa.array([{"id": 5}]), pa.array([{"id": None}])])
    pq.write_table(pa.table({rng.choice(["metaData", "other"]): column}), out)
    return out.getvalue()


def mutate_last_checkpoint(rng):
    return rng.choice(
        [
            b"",
            b"\xff\xfe",
            b"{",
            json.dumps(random_value(rng)).encode(),
            json.dumps({"version": random_value(rng)}).encode(),
            json.dumps({"version": rng.randrange(-10, 50), "size": 3}).encode(),
        ]
    )


def run_check(data, cursor):
    """The observation, or the ``SourceError`` the check raised (any other exception fails
    the test, with the variant in its message)."""
    with delta.open_session(data) as session:
        try:
            return delta.check(data, session, cursor)
        except SourceError as e:
            return e


def test_hostile_variants_of_a_real_log(s3_server, s3_client, bucket):
    table = Table(s3_server, "s3://%s/tables/events" % bucket)
    table.write([1])
    table.write([2])
    table.open().optimize.compact()  # 2: no data change
    table.open().alter.set_table_properties({"delta.appendOnly": "false"})  # 3
    table.open().create_checkpoint()  # at 3
    data = parse_flowconfig(config_text(table.uri))["data"]
    cursor = run_check(data, None).cursor  # at version 3
    table.write([3])  # 4
    table.open().optimize.compact()  # 5
    expected = "4@%s" % table.open().metadata().id
    assert run_check(data, None).value == expected and run_check(data, cursor).value == expected

    listing = s3_client.list_objects_v2(Bucket=bucket, Prefix=LOG)["Contents"]
    original = {
        o["Key"]: s3_client.get_object(Bucket=bucket, Key=o["Key"])["Body"].read() for o in listing
    }
    commits = sorted(k for k in original if delta.COMMIT_RE.match(k[len(LOG) :]))
    (checkpoint,) = [k for k in original if ".checkpoint." in k]
    rng = random.Random(19)
    outcomes = {"unchanged": 0, "failed": 0, "other value": 0}
    for number in range(VARIANTS):
        target = rng.choice(commits + [checkpoint, LOG + "_last_checkpoint"])
        if target == checkpoint:
            body, changed = mutate_checkpoint(rng, original[target]), True
        elif target.endswith("_last_checkpoint"):
            body, changed = mutate_last_checkpoint(rng), False
        else:
            text, changed = mutate_commit(rng, original[target].decode("utf-8"))
            body = text.encode("utf-8")
        s3_client.put_object(Bucket=bucket, Key=target, Body=body)
        variant = "variant %d: %s <- %r" % (number, target[len(LOG) :], body[:300])
        for start in (None, cursor):
            try:
                outcome = run_check(data, start)
            except Exception as e:  # noqa: BLE001 (the assertion is that none escapes)
                raise AssertionError("%s: %s escaped: %s" % (variant, type(e).__name__, e)) from e
            shown = (
                str(outcome)
                if isinstance(outcome, SourceError)
                else json.dumps([outcome.value, outcome.summary, outcome.cursor])
            )
            assert SECRET not in shown and TOKEN not in shown, variant
            if isinstance(outcome, SourceError):
                assert changed, "%s: failed although it cannot change data: %s" % (variant, outcome)
                outcomes["failed"] += 1
                continue
            if not changed:
                assert outcome.value == expected, variant
            outcomes["unchanged" if outcome.value == expected else "other value"] += 1
        if target in original:
            s3_client.put_object(Bucket=bucket, Key=target, Body=original[target])
        else:
            s3_client.delete_object(Bucket=bucket, Key=target)
    # The variants did reach the hostile paths, not only harmless ones.
    print("variants: %s" % outcomes)
    assert outcomes["failed"] > 0 and outcomes["unchanged"] > 0, outcomes
