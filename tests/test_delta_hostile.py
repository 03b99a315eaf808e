"""Delta source on hostile or odd logs: never a traceback, never a wrong value (issue 19).

Each test starts from a real log written by ``deltalake`` to the loopback S3 and then edits
the log's files as a buggy writer, a lagging listing or log cleanup would.
"""

import json
import time

import pytest
from conftest import use_loopback_s3
from test_delta_source import Sensor, Table, config_text

from flowproject.config import parse_flowconfig
from flowproject.exceptions import SourceError
from flowproject.sources import delta

pa = pytest.importorskip("pyarrow")
deltalake = pytest.importorskip("deltalake")

LOG = "tables/events/_delta_log/"


@pytest.fixture(autouse=True)
def s3_endpoint(s3_server, monkeypatch):
    use_loopback_s3(monkeypatch, s3_server.endpoint_url)


@pytest.fixture
def table(s3_server, bucket):
    return Table(s3_server, "s3://%s/tables/events" % bucket)


class Log(object):
    """Reads and rewrites the files of the table's ``_delta_log/``."""

    def __init__(self, s3_client, bucket):
        self.client, self.bucket = s3_client, bucket

    def key(self, name):
        return LOG + name

    def url(self, name):
        return "s3://%s/%s" % (self.bucket, self.key(name))

    def read(self, name):
        return self.client.get_object(Bucket=self.bucket, Key=self.key(name))["Body"].read()

    def write(self, name, body):
        if isinstance(body, str):
            body = body.encode("utf-8")
        self.client.put_object(Bucket=self.bucket, Key=self.key(name), Body=body)

    def delete(self, name):
        self.client.delete_object(Bucket=self.bucket, Key=self.key(name))

    def actions(self, version):
        text = self.read(delta.commit_name(version)).decode("utf-8")
        return [json.loads(line) for line in text.splitlines() if line.strip()]

    def rewrite(self, version, edit):
        """Replace commit ``version``'s actions by ``edit(actions)``'s (dicts or raw lines)."""
        lines = edit(self.actions(version))
        text = "\n".join(line if isinstance(line, str) else json.dumps(line) for line in lines)
        self.write(delta.commit_name(version), text + "\n")


@pytest.fixture
def log(s3_client, bucket):
    return Log(s3_client, bucket)


def check(uri, cursor=None, baseline=None):
    data = parse_flowconfig(config_text(uri))["data"]
    with delta.open_session(data) as session:
        if baseline is None:
            return delta.check(data, session, cursor)
        return delta.check(data, session, cursor, baseline=baseline)


def edit_action(kind, change):
    """An ``edit`` for ``Log.rewrite`` applying ``change(action body)`` to actions of ``kind``."""

    def edit(actions):
        for action in actions:
            if kind in action:
                action[kind] = change(action[kind])
        return actions

    return edit


# ---------------------------------------------------------------------------- empty tables


def test_table_created_empty_is_absent_and_its_first_append_announced(table):
    deltalake.DeltaTable.create(
        table.uri, pa.schema([("a", pa.int64())]), storage_options=table.options
    )
    sensor = Sensor(table.uri)
    empty, decided = sensor.check()
    assert empty.value is None and decided.kind == "absent" and not decided.publish
    assert empty.summary["reason"] == "no commit of the table changed data (an empty table)"
    assert "no Delta table at %s, or one without data" % table.uri in decided.warning
    # Its id is known already: the cursor is kept, and a check from it costs one LIST.
    assert empty.cursor["table_id"] == table.open().metadata().id

    table.open().alter.set_table_properties({"delta.appendOnly": "false"})
    assert sensor.check()[0].value is None  # still no data
    table.write([1])
    appended, decided = sensor.check()
    assert decided.publish and appended.value == "2@%s" % table.open().metadata().id
    # A first check of the same table (no cursor) agrees.
    assert Sensor(table.uri).check()[0].value == appended.value


def test_table_emptied_by_a_delete_is_a_version_not_absent(table):
    table.write([1])
    table.open().delete()
    assert check(table.uri).value == "1@%s" % table.open().metadata().id


# ------------------------------------------------------------------------- malformed fields


def test_commit_info_that_is_not_an_object_is_ignored(table, log):
    table.write([1])
    table.write([2])
    log.rewrite(1, edit_action("commitInfo", lambda info: "WRITE"))
    observation = check(table.uri)
    assert observation.value == "1@%s" % table.open().metadata().id
    assert observation.summary["commits"][-1]["operation"] is None


def test_stats_that_are_not_an_object_leave_rows_unknown(table, log):
    table.write([1, 2])
    table.write([3])
    log.rewrite(1, edit_action("add", lambda add: dict(add, stats="[1]")))
    observation = check(table.uri)
    assert observation.value.startswith("1@")
    assert "rows_added" not in observation.summary["commits"][-1]


def test_metadata_that_is_a_list_names_file_and_field(table, log):
    table.write([1])
    log.rewrite(0, edit_action("metaData", lambda meta: [meta]))
    with pytest.raises(SourceError) as raised:
        check(table.uri)
    message = str(raised.value)
    assert log.url("00000000000000000000.json") in message
    assert "metaData: expected an object, found a list" in message


@pytest.mark.parametrize(
    "change, field, found",
    [
        (lambda add: dict(add, dataChange="true"), "add.dataChange", "found a string"),
        (lambda add: {k: v for k, v in add.items() if k != "dataChange"}, "add.dataChange", ""),
        (lambda add: None, "add", "expected an object, found null"),
    ],
)
def test_data_change_that_is_not_a_boolean_names_file_and_field(table, log, change, field, found):
    table.write([1])
    table.write([2])
    sensor = Sensor(table.uri)
    sensor.check()
    table.write([3])
    log.rewrite(2, edit_action("add", change))
    with pytest.raises(SourceError) as raised:
        sensor.check()  # from the cursor
    message = str(raised.value)
    assert log.url("00000000000000000002.json") in message
    assert field in message and found in message


def test_lines_that_are_not_actions_name_file_and_line(table, log):
    table.write([1])
    table.write([2])
    bad_line = len(log.actions(1)) + 1
    log.rewrite(1, lambda actions: actions + ["[1, 2]"])
    with pytest.raises(SourceError) as raised:
        check(table.uri)
    assert log.url("00000000000000000001.json") in str(raised.value)
    assert "line %d: expected a JSON object, found a list" % bad_line in str(raised.value)
    log.write(delta.commit_name(1), b"\xff\xfe{}")
    with pytest.raises(SourceError) as raised:
        check(table.uri)
    assert "file: not UTF-8 text" in str(raised.value)


def test_garbage_checkpoint_names_the_checkpoint(table, log):
    table.write([1])
    table.write([2])
    table.open().create_checkpoint()  # at version 1
    table.open().optimize.compact()  # version 2: no metaData after the checkpoint
    name = "00000000000000000001.checkpoint.parquet"
    log.write(name, b"PAR1 not a parquet file at all PAR1")
    with pytest.raises(SourceError) as raised:
        check(table.uri)
    message = str(raised.value)
    assert (
        "Could not read the Delta checkpoint %s: file: not a parquet checkpoint" % log.url(name)
        in message
    )


@pytest.mark.parametrize(
    "content",
    [b'{"version": 100, "size": 3}', b'{"version": -5}', b'{"version": true}', b"[", b"\xff"],
)
def test_last_checkpoint_is_only_a_hint(table, log, content):
    table.write([1])
    table.write([2])
    table_id = table.open().metadata().id
    log.write("_last_checkpoint", content)
    assert check(table.uri).value == "1@%s" % table_id


def test_negative_last_checkpoint_is_no_version(table, log):
    deltalake.DeltaTable.create(
        table.uri, pa.schema([("a", pa.int64())]), storage_options=table.options
    )
    log.write("_last_checkpoint", b'{"version": -5}')
    observation = check(table.uri)
    assert observation.value is None and observation.summary["latest_version"] == 0


def test_stale_last_checkpoint_with_a_real_checkpoint_still_reads_the_data(table, log):
    table.write([1])
    table.write([2])
    table.open().create_checkpoint()  # at 1
    table.open().optimize.compact()  # 2, no data change
    table_id = table.open().metadata().id
    log.write("_last_checkpoint", b'{"version": 7, "size": 3}')
    assert check(table.uri).value == "1@%s" % table_id


def test_timestamp_in_microseconds_is_shown_as_unknown(table, log):
    import json as _json

    from flowproject.cards import commit_rows, render_sensor_card

    table.write([1])
    table.write([2])
    sensor = Sensor(table.uri)
    sensor.check()
    table.write([3])
    micros = int(time.time() * 1_000_000)
    log.rewrite(2, edit_action("commitInfo", lambda info: dict(info, timestamp=micros)))
    observation, decided = sensor.check()
    assert decided.publish and observation.value.startswith("2@")
    assert observation.summary["commits"][-1]["timestamp"] is None
    assert "table_version_timestamp" not in observation.summary
    card = []
    render_sensor_card(card, observation, decided, sensor.state, None, "ev", False)
    assert '["2", "WRITE", "", "yes", "1"]' in _json.dumps([c.render() for c in card])
    # A cursor or summary written before this fix may still hold one: unknown, not a raise.
    assert commit_rows([{"version": 2, "timestamp": micros, "data_change": True}])[0][2] == (
        "unknown"
    )
    assert commit_rows([{"version": 2, "timestamp": float("nan")}])[0][2] == "unknown"


# ------------------------------------------------------------------------------------ gaps


def test_out_of_order_listing_never_skips_a_version(table, log):
    table.write([1])
    sensor = Sensor(table.uri)
    first, _ = sensor.check()
    table_id = table.open().metadata().id
    table.write([2])  # version 1: an append
    table.open().optimize.compact()  # version 2: no data change
    hidden = log.read(delta.commit_name(1))
    log.delete(delta.commit_name(1))  # listed after version 2, as a lagging store would

    waiting, decided = sensor.check()
    assert not decided.publish and waiting.value == first.value
    assert waiting.summary["waiting_for"] == 1 and waiting.cursor["version"] == 0

    log.write(delta.commit_name(1), hidden)
    appended, decided = sensor.check()
    assert decided.publish and appended.value == "1@%s" % table_id
    assert appended.summary["latest_version"] == 2 and "waiting_for" not in appended.summary
    assert check(table.uri).value == appended.value  # a read without the cursor agrees


def test_a_gap_that_stays_is_reported_after_three_checks(table, log):
    table.write([1])
    sensor = Sensor(table.uri)
    sensor.check()
    table.write([2])
    table.write([3])
    log.delete(delta.commit_name(1))
    for seen in (1, 2):
        observation, decided = sensor.check()
        assert not decided.publish and observation.cursor["gap"] == {"version": 1, "checks": seen}
    for _ in range(2):  # and on every check after, until it appears
        with pytest.raises(SourceError) as raised:
            sensor.check()
        assert "The Delta commit %s is missing although later commits are listed, on 3 checks" % (
            log.url("00000000000000000001.json")
        ) in str(raised.value)


def test_log_without_its_first_commit_or_a_checkpoint_fails_naming_it(table, log):
    table.write([1])
    table.write([2])
    log.delete(delta.commit_name(0))
    with pytest.raises(SourceError) as raised:
        check(table.uri)
    assert "has commits from version 1 on but neither 00000000000000000000.json" in str(
        raised.value
    )


# ------------------------------------------------------------------ the cursor is a hint


# The objects of the table cleaned_up_table() writes, kept after the first test writes them:
# deltalake takes over a second for the 13 commits, putting the objects back a tenth of that.
_CLEANED_UP_OBJECTS = []


def cleaned_up_table(table, log, removed):
    """v0 an append, v1-v12 property changes (no data), a checkpoint at 10, then commits
    ``removed`` deleted as log cleanup does. Returns the value before the cleanup."""
    prefix = LOG.rsplit("_delta_log/", 1)[0]
    if _CLEANED_UP_OBJECTS:
        for key, body in _CLEANED_UP_OBJECTS:
            log.client.put_object(Bucket=log.bucket, Key=key, Body=body)
    else:
        table.write([1])
        for number in range(1, 13):
            table.open().alter.set_table_properties(
                {"delta.appendOnly": "false"}, raise_if_not_exists=False
            )
            if number == 10:
                table.open().create_checkpoint()
        listed = log.client.list_objects_v2(Bucket=log.bucket, Prefix=prefix)["Contents"]
        _CLEANED_UP_OBJECTS.extend(
            (o["Key"], log.client.get_object(Bucket=log.bucket, Key=o["Key"])["Body"].read())
            for o in listed
        )
    before = check(table.uri).value
    assert before == "0@%s" % table.open().metadata().id
    for version in removed:
        log.delete(delta.commit_name(version))
    return before


def test_lost_cursor_after_cleanup_cannot_tell_and_says_why(table, log):
    baseline = cleaned_up_table(table, log, removed=range(10))
    table_id = baseline.split("@")[1]
    observation = check(table.uri, baseline=baseline)
    assert observation.value == "10@%s" % table_id  # the checkpoint stands in ...
    reason = observation.summary["cannot_tell"]  # ... and says so
    assert "no commit from version 10 to 12 changed data" in reason
    assert "commit 9 and older are gone from the log" in reason
    assert "the last announced value 0@%s is older than what remains of the log" % table_id in (
        reason
    )
    # The cursor remembers: the next check says it again while the baseline differs ...
    again = check(table.uri, observation.cursor, baseline="0@%s" % table_id)
    assert again.value == observation.value and "cannot_tell" in again.summary
    # ... and not once the stand-in is the baseline.
    accepted = check(table.uri, observation.cursor, baseline=observation.value)
    assert "cannot_tell" not in accepted.summary
    assert "nothing was announced" in check(table.uri).summary["cannot_tell"]
    assert "of another table id" in check(table.uri, baseline="0@other").summary["cannot_tell"]
    assert (
        "'events' is not a Delta version"
        in check(table.uri, baseline="events").summary["cannot_tell"]
    )
    newer = check(table.uri, baseline="99@%s" % table_id).summary["cannot_tell"]
    assert "99@%s is newer than the log read (version 12)" % table_id in newer
    # A data change after the checkpoint ends the stand-in.
    table.write([2])
    changed = check(table.uri, observation.cursor, baseline="0@%s" % table_id)
    assert changed.value == "13@%s" % table_id and "cannot_tell" not in changed.summary


def test_lost_cursor_keeps_the_baseline_when_the_log_proves_it(table, log):
    baseline = cleaned_up_table(table, log, removed=[0])
    observation = check(table.uri, baseline=baseline)
    # Commits 1-12 are all there and none changed data: the data is version 0's.
    assert observation.value == baseline and "cannot_tell" not in observation.summary
    assert observation.summary["latest_version"] == 12


def test_lost_cursor_walks_back_to_the_baseline_beyond_the_usual_limit(table, log, monkeypatch):
    baseline = cleaned_up_table(table, log, removed=[])
    monkeypatch.setattr(delta, "MAX_WALK_BACK", 3)
    assert "walk back stops after 3 commits" in check(table.uri).summary["cannot_tell"]
    observation = check(table.uri, baseline=baseline)
    assert observation.value == baseline and "cannot_tell" not in observation.summary


def lose_cursor(sensor):
    import dataclasses

    sensor.state = dataclasses.replace(sensor.state, cursor=None)


def test_issue_case_through_the_flows_decision_lost_cursor_proved_is_unchanged(table, log):
    sensor = Sensor(table.uri)
    baseline = cleaned_up_table(table, log, removed=[])
    announced, decided = sensor.check()
    assert decided.publish and announced.value == baseline
    log.delete(delta.commit_name(0))  # log cleanup of the announced commit alone
    lose_cursor(sensor)
    again, decided = sensor.check()
    assert again.value == baseline and decided.kind == "unchanged" and not decided.publish


def test_issue_case_through_the_flows_decision_lost_cursor_cannot_tell_says_why(table, log):
    sensor = Sensor(table.uri)
    baseline = cleaned_up_table(table, log, removed=[])
    sensor.check()
    for version in range(10):  # log cleanup up to the checkpoint at 10
        log.delete(delta.commit_name(version))
    lose_cursor(sensor)
    after, decided = sensor.check()
    assert after.value == "10@%s" % baseline.split("@")[1]
    assert decided.kind == "first"  # not "changed from 0@... to 10@..."
    assert "cannot tell whether the data changed since the announced" in decided.reason
    assert "commit 9 and older are gone from the log" in decided.reason
