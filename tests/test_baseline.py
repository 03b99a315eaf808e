"""The baseline knows what it is the baseline of (issue 9, promises 6 to 9), as plain functions.

Fast: no flow runs, no servers. The end-to-end counterparts are in test_baseline_e2e.py.
"""

import io
import json

import pytest

from flowproject import state as state_mod
from flowproject.cards import render_sensor_card
from flowproject.sensor import Baseline, SensorState, advance, change_id, decide
from flowproject.sources import s3 as s3_source
from flowproject.sources import snowflake as sf_source
from flowproject.sources import source_absent_message, source_identity
from flowproject.sources.observation import Observation
from flowproject.state import StateStore

FLOW, BRANCH, PROJECT = "SensorFlow", "user.alice", "proj"
ENV = {"AWS_ENDPOINT_URL_S3": "http://127.0.0.1:9000"}


def s3_data(key="events/", check_mode="files_metadata", **extra):
    raw = dict(type="s3", bucket="s3://my-ml-data", key=key, check_mode=check_mode, **extra)
    return s3_source.normalize(raw)


def obs(value):
    return Observation(value, {})


def check(value, state, data=None, **options):
    """One decision and the state after it (published when the decision says so)."""
    data = data or s3_data()
    o = obs(value)
    d = decide(
        o,
        state,
        FLOW,
        BRANCH,
        project=PROJECT,
        identity=s3_source.identity(data, ENV),
        absent_message=s3_source.absent_message(data),
        **options,
    )
    return d, advance(state, o, d, "SensorFlow/%d" % (len(state.history) + 1), d.publish)


# ------------------------------------------------------------------------------ 6. identity


def test_another_key_starts_a_new_baseline_and_says_why():
    first, state = check("v1", SensorState())
    assert first.publish and state.identity["key"] == "events/"
    assert state.scope == {"flow": FLOW, "project": PROJECT, "branch": BRANCH, "source": "default"}

    moved, after = check("v2", state, data=s3_data(key="events-v2/"))
    assert moved.publish and moved.kind == "first" and moved.previous_value is None
    assert moved.new_baseline and moved.baseline_run is None
    assert moved.reason.startswith(
        "the watched source changed from key='events/' to key='events-v2/', so this starts a "
        "new baseline: first check"
    )
    assert after.baseline.value == "v2" and after.identity["key"] == "events-v2/"
    assert len(after.history) == 2  # the branch's history goes on
    # From then on it is compared as usual.
    again, _ = check("v2", after, data=s3_data(key="events-v2/"))
    assert again.kind == "unchanged"


def test_another_source_follows_on_first_check_accept():
    _, state = check("v1", SensorState(), on_first_check="accept")
    moved, after = check("v1", state, data=s3_data(key="other/"), on_first_check="accept")
    assert (moved.action, moved.kind) == ("accept", "accepted")  # same value, still no compare
    assert "the watched source changed" in moved.reason and not moved.publish
    assert after.baseline.run == "SensorFlow/2"


def test_a_settling_value_of_the_old_source_is_dropped():
    _, state = check("v1", SensorState())
    d, state = check("v2", state, settle_checks=2)
    assert state.pending is not None
    moved, after = check("v3", state, data=s3_data(key="other/"), settle_checks=2)
    assert moved.kind == "settling" and moved.pending_seen == 0 and moved.new_baseline
    assert after.baseline is None and after.pending.value == "v3"


def test_state_written_before_identities_adopts_the_current_one_silently():
    old = SensorState(baseline=Baseline("v1", obs("v1").fingerprint, "cid", "SensorFlow/1"))
    assert old.scope is None and old.identity is None
    d, after = check("v1", old)
    assert d.kind == "unchanged" and not d.new_baseline
    assert "watched source" not in d.reason
    assert after.identity == s3_source.identity(s3_data(), ENV)
    assert after.scope["project"] == PROJECT


def test_state_copied_from_another_project_is_not_compared_and_its_history_dropped():
    _, state = check("v1", SensorState())
    copied = SensorState.from_dict(dict(state.to_dict(), scope=dict(state.scope, project="other")))
    d, after = check("v1", copied)
    assert d.publish and d.kind == "first" and d.new_baseline
    assert "belongs to project='other', not to project='proj'" in d.reason
    assert len(after.history) == 1


def test_identity_holds_only_what_changes_the_value():
    base = s3_source.identity(s3_data(include=["*.parquet", "*.csv"]), ENV)
    assert base == {
        "type": "s3",
        "endpoint": "127.0.0.1",
        "bucket": "my-ml-data",
        "key": "events/",
        "check_mode": "files_metadata",
        "include": ["*.csv", "*.parquet"],
        "exclude": [],
    }
    same = s3_data(
        include=["*.csv", "*.parquet"],
        list_concurrency=2,
        role="arn:aws:iam::123456789012:role/reader",
    )
    assert s3_source.identity(same, {"AWS_ENDPOINT_URL": "http://127.0.0.1:9999"}) == base
    assert s3_source.identity(s3_data(), {})["endpoint"] == "s3.amazonaws.com"
    assert s3_source.identity(s3_data(key="events"), ENV)["key"] == "events/"  # normalized
    for other in (s3_data(key="a/"), s3_data(key="events/x.csv", check_mode="etag")):
        assert s3_source.identity(other, ENV) != base
    assert source_identity(s3_data())["type"] == "s3"


def test_snowflake_identity_normalises_sql_and_keeps_params_and_no_secret():
    data = {
        "type": "snowflake",
        "template": "t",
        "query_text": "SELECT max(ts)  -- newest\n  FROM events /* all */ WHERE x = 'a  b';\n",
        "params": {"b": 1, "a": "x"},
        "warehouse": "WH",
        "database": "DB",
    }
    env = {
        "SNOWFLAKE_ACCOUNT": "acme",
        "SNOWFLAKE_USER": "u",
        "SNOWFLAKE_PASSWORD": "hunter2-secret",
        "SNOWFLAKE_ROLE": "READER",
        "SNOWFLAKE_SCHEMA": "PUBLIC",
    }
    found = sf_source.identity(data, env)
    assert found == {
        "type": "snowflake",
        "account": "acme",
        "database": "DB",
        "schema": "PUBLIC",
        "role": "READER",
        "sql": "SELECT max(ts) FROM events WHERE x = 'a  b'",
        "params": {"a": "x", "b": 1},
    }
    assert "hunter2" not in json.dumps(found)
    relaid = dict(data, query_text="select_is_not_this", warehouse="OTHER")
    assert sf_source.identity(relaid, env) != found
    assert sf_source.identity(dict(data, warehouse="OTHER"), env) == found
    assert sf_source.identity(dict(data, params={"a": "y", "b": 1}), env) != found
    assert sf_source.identity(data, dict(env, SNOWFLAKE_ACCOUNT="other")) != found
    integration = sf_source.identity(dict(data, integration="prod"), env)
    assert integration["integration"] == "prod" and "account" not in integration


# ------------------------------------------------------------------------------ 7. wrong types


@pytest.fixture
def storage(tmp_path):
    from metaflow.plugins.datastores.local_storage import LocalStorage

    return LocalStorage(str(tmp_path / ".metaflow"))


WRONG_TYPES = {
    "history is text": {"version": 1, "baseline": None, "history": "abc"},
    "value is a number": {
        "baseline": {"value": 5, "fingerprint": "f", "change_id": "c"},
        "history": [],
    },
    "seen is text": {
        "baseline": None,
        "pending": {"value": "v", "fingerprint": "f", "seen": "2"},
    },
    "history entries are text": {"baseline": None, "history": ["a", "b"]},
    "not an object": ["baseline"],
    "scope is text": {"scope": "SensorFlow"},
}


@pytest.mark.parametrize("doc", list(WRONG_TYPES.values()), ids=list(WRONG_TYPES))
def test_state_with_wrong_types_is_recovered_from_runs_and_said(storage, monkeypatch, capsys, doc):
    store = StateStore(storage, FLOW, PROJECT, BRANCH)
    storage.save_bytes([(store.path, io.BytesIO(json.dumps(doc).encode()))], overwrite=True)

    def recovered(*args):
        s = SensorState(baseline=Baseline("v1", obs("v1").fingerprint, "cid", "SensorFlow/5"))
        s.recovered_from = "SensorFlow/5"
        return s

    monkeypatch.setattr(state_mod, "recover_from_runs", recovered)
    state = store.load()
    assert state.baseline.value == "v1" and state.recovered_from == "SensorFlow/5"
    err = capsys.readouterr().err
    assert "is unreadable (wrong shape" in err and "recovered the baseline from run" in err
    # The later step's quiet load recovers from the run the decision names, and never raises.
    monkeypatch.setattr(state_mod, "recover_from_run", lambda run: recovered())
    assert store.load(quiet=True, baseline_run="SensorFlow/5").baseline.value == "v1"
    d, after = check("v1", state)
    assert d.kind == "unchanged"
    render_sensor_card([], obs("v1"), d, after, None, "ev", False)


def test_baseline_recovered_from_a_run_keeps_what_it_was_of():
    class Artifact:
        def __init__(self, data):
            self.data = data

    class Task(dict):
        successful, finished_at = True, "t0"

        def __getitem__(self, name):
            return Artifact(dict.__getitem__(self, name))

    class Step:
        def __init__(self, task):
            self.task = task

    class Run(dict):
        pathspec = "SensorFlow/7"

        def __iter__(self):  # a Metaflow Run iterates over its steps
            return iter(self.values())

    identity = s3_source.identity(s3_data(), ENV)
    end = Task(announced=True, announced_value="v1", change_id="cid")
    assert state_mod._baseline_of(Run(end=Step(end))).identity is None  # an older run: adopted
    end["announced_identity"] = identity
    recovered = state_mod._baseline_of(Run(end=Step(end)))
    assert recovered.identity == identity and recovered.baseline.value == "v1"
    d, _ = check("v1", recovered, data=s3_data(key="other/"))
    assert d.new_baseline and "the watched source changed" in d.reason


def test_state_with_identity_round_trips_through_the_store(storage, capsys):
    _, state = check("v1", SensorState())
    store = StateStore(storage, FLOW, PROJECT, BRANCH)
    store.save(state, None)
    loaded = store.load()
    assert loaded.identity == state.identity and loaded.scope == state.scope
    assert capsys.readouterr().err == ""


# ------------------------------------------------------------------------------ 8. absent


@pytest.mark.parametrize("on_first_check", ["publish", "accept"])
def test_first_check_finding_nothing_publishes_nothing_and_warns(on_first_check):
    d, state = check(
        None, SensorState(), data=s3_data(key="evnets/"), on_first_check=on_first_check
    )
    assert (d.action, d.kind, d.publish, d.moves_baseline) == ("accept", "absent", False, True)
    assert d.warning == (
        "the first check found the source absent: no objects under s3://my-ml-data/evnets/"
    )
    assert state.baseline.value is None and state.history[-1]["kind"] == "absent"

    still, state = check(None, state, data=s3_data(key="evnets/"), on_first_check=on_first_check)
    assert still.kind == "unchanged" and still.warning is None

    appeared, state = check("v1", state, data=s3_data(key="evnets/"), on_first_check=on_first_check)
    assert appeared.publish and appeared.kind == "changed" and appeared.previous_value is None
    assert "changed from absent to v1" in appeared.reason

    gone, state = check(None, state, data=s3_data(key="evnets/"), on_first_check=on_first_check)
    assert gone.publish and gone.previous_value == "v1"


def test_absent_messages_name_what_was_absent():
    assert source_absent_message(s3_data()) == "no objects under s3://my-ml-data/events/"
    filtered = s3_data(include=["*.parquet"], exclude=["_tmp/*"])
    assert s3_source.absent_message(filtered) == (
        "no objects under s3://my-ml-data/events/ (include *.parquet; exclude _tmp/*)"
    )
    single = s3_data(key="f/latest.parquet", check_mode="etag")
    assert s3_source.absent_message(single) == "no object at s3://my-ml-data/f/latest.parquet"
    assert "sql/newest.sql returned no rows" in sf_source.absent_message({"template": "newest"})


def test_absent_first_check_with_a_new_source_also_warns():
    _, state = check("v1", SensorState())
    d, _ = check(None, state, data=s3_data(key="evnets/"))
    assert d.kind == "absent" and not d.publish and d.warning
    assert "the watched source changed from key='events/' to key='evnets/'" in d.reason


def test_forced_check_still_publishes_the_absent_state():
    d, _ = check(None, SensorState(), force=True)
    assert d.publish and d.kind == "forced"


def test_card_shows_the_warning_as_text():
    d, state = check(None, SensorState(), data=s3_data(key="x<img src=x onerror=alert(1)>/"))
    card = []
    render_sensor_card(card, obs(None), d, state, None, "ev", False)
    rendered = json.dumps([c.render() for c in card])
    assert "Source absent, recorded as the baseline (no event)" in rendered
    table = next(c.render() for c in card if c.render().get("type") == "table")
    assert [
        "Warning",
        "the first check found the source absent: no objects under "
        "s3://my-ml-data/x<img src=x onerror=alert(1)>/",
    ] in table["data"]


# ------------------------------------------------------------------------------ 9. change_id


def test_change_id_differs_across_project_and_source():
    fp = obs("v1").fingerprint
    ids = {
        change_id(FLOW, BRANCH, fp),
        change_id(FLOW, BRANCH, fp, project="a"),
        change_id(FLOW, BRANCH, fp, project="b"),
        change_id(FLOW, BRANCH, fp, project="a", source="orders"),
        change_id("Other", BRANCH, fp, project="a"),
        change_id(FLOW, "prod", fp, project="a"),
        change_id(FLOW, BRANCH, obs("v2").fingerprint, project="a"),
    }
    assert len(ids) == 7 and all(len(i) == 32 for i in ids)
    assert change_id(FLOW, BRANCH, fp, project="a") == change_id(FLOW, BRANCH, fp, project="a")
    # No separator trick: fields cannot be shifted between one another.
    assert change_id("a", "b\x00c", fp) != change_id("a\x00b", "c", fp)


def test_decisions_carry_the_project_and_source_in_their_change_id():
    o = obs("v1")
    a = decide(o, SensorState(), FLOW, BRANCH, project="a")
    b = decide(o, SensorState(), FLOW, BRANCH, project="b")
    other = decide(o, SensorState(), FLOW, BRANCH, project="a", source="orders")
    assert len({a.change_id, b.change_id, other.change_id}) == 3
    assert a.change_id == change_id(FLOW, BRANCH, o.fingerprint, project="a")
