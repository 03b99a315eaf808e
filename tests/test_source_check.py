"""A source's check, from its state read to its commit, without a flow run (issue 18).

A stand-in source module (registered like a real one) lets each rule be driven exactly: a
check that runs out of time keeps its progress, a cursor source gets its cursor and the
announced value as hints, a source that cannot tell follows ``on_first_check``.
"""

import io
import sys
import threading
import time
import types

import pytest

from flowproject import sources as sources_mod
from flowproject.config import WatchedSource
from flowproject.exceptions import SourceIncomplete
from flowproject.sensor import SensorState, decide
from flowproject.source_check import SourceCheck, check_deadline
from flowproject.sources.observation import Observation
from flowproject.state import StateStore, state_record

FLOW, BRANCH, RUN = "SensorFlow", "user.tester", "SensorFlow/1"
SENSOR = {
    "settle_checks": 0,
    "on_first_check": "publish",
    "history_size": 10,
    "publish_timeout": 5,
    "payload_key": "data_version",
    "event_name": "table_updated",
}


class LogSource(object):
    """A table log read from a cursor: ``versions`` commits, ``per_check`` read per check
    before the deadline (then ``SourceIncomplete``)."""

    def __init__(self, versions, per_check=None):
        self.versions, self.per_check = versions, per_check
        self.calls = []

    def module(self):
        source = self

        class Session(object):
            deadline = None

        module = types.ModuleType("fake_log_source")
        module.TYPE = "log"
        module.USES_CURSOR = True
        module.identity = lambda data: {"type": "log", "uri": data["uri"]}
        module.absent_message = lambda data: "no table at %s" % data["uri"]
        module.describe = lambda data: data["uri"]

        class open_session(object):
            def __init__(self, data):
                self.session = Session()

            def __enter__(self):
                return self.session

            def __exit__(self, *exc):
                return False

        module.open_session = open_session

        def check(data, session, cursor=None, baseline=None):
            source.calls.append(
                {"cursor": cursor, "baseline": baseline, "deadline": session.deadline}
            )
            read = 0 if cursor is None else cursor["version"]
            if source.per_check is not None and source.versions - read > source.per_check:
                reached = read + source.per_check
                raise SourceIncomplete(
                    "read commits %d to %d of %d" % (read + 1, reached, source.versions),
                    cursor={"version": reached},
                )
            return Observation(
                "%d@t" % source.versions, {"state": "present"}, cursor={"version": source.versions}
            )

        module.check = check
        return module


@pytest.fixture
def log_source(monkeypatch):
    made = {}

    def install(versions, per_check=None):
        source = LogSource(versions, per_check)
        module = source.module()
        monkeypatch.setitem(sys.modules, "fake_log_source", module)
        monkeypatch.setitem(sources_mod.SOURCE_TYPES, "log", "fake_log_source")
        made["source"] = source
        return source

    return install


@pytest.fixture
def storage(tmp_path):
    from metaflow.plugins.datastores.local_storage import LocalStorage

    return LocalStorage(str(tmp_path / ".metaflow"))


def source_check(storage, run=RUN, name="default"):
    watched = WatchedSource(name, {"type": "log", "uri": "s3://b/t"}, dict(SENSOR))
    return SourceCheck(watched, FLOW, "lake", BRANCH, run, storage)


def test_a_check_out_of_time_keeps_its_progress_announces_nothing_and_the_backlog_clears(
    storage, log_source
):
    source = log_source(versions=3)
    first = source_check(storage)
    assert first.check_and_decide(timeout=10).publish  # 3@t announced below
    first.commit(
        first.observation, first.decision, *first.store.load_versioned(quiet=True), published=True
    )

    # 2,500 new commits, 1,000 readable per check: two checks run out of time.
    source.versions, source.per_check = 2503, 1000
    reached = []
    for n in range(2, 4):
        check = source_check(storage, run="SensorFlow/%d" % n)
        with pytest.raises(SourceIncomplete):
            check.check_and_decide(timeout=10)
        state = check.store.load(quiet=True)
        reached.append(state.cursor["version"])
        assert state.baseline.value == "3@t"  # nothing announced, baseline kept
        assert check.record["cursor"] == state.cursor  # the step's artifact says the same
        assert "progress made is kept" in check.fail(SourceIncomplete("x"), 10)
    assert reached == [1003, 2003]

    last = source_check(storage, run="SensorFlow/4")
    decision = last.check_and_decide(timeout=10)
    assert decision.publish and decision.reason == "changed from 3@t to 2503@t"
    # Each check was given the deadline of its source_timeout, less the margin to commit.
    assert all(call["deadline"] is not None for call in source.calls)


def test_a_cursor_source_is_given_its_cursor_and_announced_value_of_the_same_identity_only(
    storage, log_source
):
    source = log_source(versions=5)
    check = source_check(storage)
    check.check_and_decide()
    assert source.calls[-1]["cursor"] is None and source.calls[-1]["baseline"] is None
    state, version = check.store.load_versioned(quiet=True)
    check.commit(check.observation, check.decision, state, version, published=True)

    source_check(storage, run="SensorFlow/2").check_and_decide()
    assert source.calls[-1]["cursor"] == {"version": 5}
    assert source.calls[-1]["baseline"] == "5@t"

    # Another table under the same source name: neither hint is passed.
    other = WatchedSource("default", {"type": "log", "uri": "s3://b/other"}, dict(SENSOR))
    SourceCheck(other, FLOW, "lake", BRANCH, "SensorFlow/3", storage).check_and_decide()
    assert source.calls[-1]["cursor"] is None and source.calls[-1]["baseline"] is None


def test_deadline_leaves_time_to_commit():
    assert check_deadline(10, started=100.0) == pytest.approx(109.0)
    assert check_deadline(900, started=0.0) == pytest.approx(870.0)


def observed(value, **summary):
    return Observation(value, dict({"state": "present"}, **summary))


def announced(value):
    first = decide(observed(value), SensorState(), FLOW, BRANCH)
    from flowproject.sensor import advance

    return advance(SensorState(), observed(value), first, "SensorFlow/1", published=True)


@pytest.mark.parametrize("on_first_check, action", [("publish", "publish"), ("accept", "accept")])
def test_a_source_that_cannot_tell_makes_a_first_check_that_says_why(on_first_check, action):
    state = announced("1001")
    why = "snapshot 1002's parent 1001 was expired and no cursor was kept"
    decision = decide(
        observed("1003", cannot_tell=why), state, FLOW, BRANCH, on_first_check=on_first_check
    )
    assert (decision.action, decision.kind) == (
        action,
        "first" if action == "publish" else "accepted",
    )
    assert decision.reason.startswith(
        "cannot tell whether the data changed since the announced 1001 (%s), so this is a "
        "first check: 1003" % why
    )
    assert decision.previous_value == "1001"
    # The same value as announced is unchanged, whatever the source could not tell.
    same = decide(observed("1001", cannot_tell=why), state, FLOW, BRANCH)
    assert same.kind == "unchanged"


class CharByCharStream(io.StringIO):
    """A stream whose writes let other threads in between characters, as a pipe may."""

    def write(self, text):
        for char in text:
            super().write(char)
            time.sleep(0)
        return len(text)


def test_lines_of_sources_checked_in_threads_never_merge(storage, log_source, monkeypatch):
    log_source(versions=1)
    stream = CharByCharStream()
    monkeypatch.setattr(sys, "stdout", stream)
    checks = [source_check(storage, name="source_%d" % n) for n in range(4)]
    text = "unchanged since the last announcement: " + "x" * 60

    def say_many(check):
        for _ in range(25):
            check.say(text)

    threads = [threading.Thread(target=say_many, args=(c,)) for c in checks]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    lines = stream.getvalue().splitlines()
    assert len(lines) == 100
    assert all(line in {"%s: %s" % (c.name, text) for c in checks} for line in lines)


def test_a_card_part_that_cannot_be_drawn_is_a_line_on_the_card_not_a_failed_step(capsys):
    from flowproject.baseflow import BaseFlow

    card = []

    def broken(*args, **kwargs):
        card.append("half of it")
        raise ValueError("year 55840 is out of range")

    BaseFlow._draw(None, card, "source events", broken)
    assert card[0] == "half of it"
    shown = card[1].render() if hasattr(card[1], "render") else card[1]
    assert "could not show source events: ValueError" in str(shown)
    assert "Card: could not draw source events: ValueError" in capsys.readouterr().err


def test_the_record_of_a_state_is_what_recovery_needs_and_no_history(storage, log_source):
    log_source(versions=7)
    check = source_check(storage)
    check.check_and_decide()
    state, version = check.store.load_versioned(quiet=True)
    written, _ = check.commit(check.observation, check.decision, state, version, published=True)
    record = check.record
    assert record == state_record(written, RUN) | {"written_at": record["written_at"]}
    assert record["history"] == [] and written.history  # the history stays in the object
    assert record["cursor"] == {"version": 7} and record["baseline"]["value"] == "7@t"
    assert StateStore(storage, FLOW, "lake", BRANCH).load(quiet=True).cursor == record["cursor"]


def test_a_check_of_many_requests_keeps_the_first_hundred_and_counts_the_rest():
    from flowproject.sources import shown_requests

    requests = [{"request": "ListObjectsV2", "seconds": 0.01}]
    requests += [
        {"request": "GetObject", "seconds": 0.002, "key": "%d.json" % n} for n in range(10000)
    ]
    shown = shown_requests(requests)
    assert len(shown) == 101
    assert shown[:100] == requests[:100]
    assert shown[100] == {"request": "GetObject", "count": 9901, "seconds": 19.802}
    assert shown_requests(requests[:50]) == requests[:50]
