"""The sensor's rules as plain functions: decide, advance, change_id, listings, state store.

Fast: no flow runs, no servers. The state store is exercised against Metaflow's local
datastore storage in a temporary folder.
"""

import gzip
import json

import pytest

from flowproject import state as state_mod
from flowproject.sensor import (
    Pending,
    SensorState,
    advance,
    change_id,
    decide,
)
from flowproject.sources.observation import Observation
from flowproject.sources.s3_listing import (
    diff_listings,
    pack_listing,
    parse_listing,
    read_listing_file,
    unpack_listing,
)
from flowproject.state import StateStore, state_path

FLOW, BRANCH = "SensorFlow", "user.alice"


def obs(value, **summary):
    return Observation(value, summary)


def announced(value, run="SensorFlow/1"):
    """A state whose baseline is ``value``, announced by ``run``."""
    o = obs(value)
    d = decide(o, SensorState(), FLOW, BRANCH)
    return advance(SensorState(), o, d, run, published=True, at="t0")


# ------------------------------------------------------------------------------ change_id


def test_change_id_is_stable_and_scoped():
    fp = obs("v1").fingerprint
    assert change_id(FLOW, BRANCH, fp) == change_id(FLOW, BRANCH, fp)
    assert change_id(FLOW, BRANCH, fp) != change_id(FLOW, "prod", fp)
    assert change_id(FLOW, BRANCH, fp) != change_id("OtherFlow", BRANCH, fp)
    assert change_id(FLOW, BRANCH, fp) != change_id(FLOW, BRANCH, obs("v2").fingerprint)
    assert len(change_id(FLOW, BRANCH, fp)) == 32


def test_absent_value_has_its_own_fingerprint():
    assert obs(None).fingerprint != obs("").fingerprint


# ------------------------------------------------------------------------------ decide


def test_first_check_publishes_with_no_previous_value():
    d = decide(obs("v1"), SensorState(), FLOW, BRANCH)
    assert d.publish and d.kind == "first" and d.previous_value is None
    assert d.change_id == change_id(FLOW, BRANCH, obs("v1").fingerprint)
    assert d.baseline_run is None


def test_unchanged_skips_with_reason():
    d = decide(obs("v1"), announced("v1"), FLOW, BRANCH)
    assert not d.publish and d.kind == "unchanged"
    assert "unchanged" in d.reason and d.previous_value == "v1"
    assert d.baseline_run == "SensorFlow/1"


def test_changed_publishes_with_previous_value():
    d = decide(obs("v2"), announced("v1"), FLOW, BRANCH)
    assert d.publish and d.kind == "changed" and d.previous_value == "v1"
    assert "v1" in d.reason and "v2" in d.reason


def test_present_to_absent_is_a_change():
    d = decide(obs(None), announced("v1"), FLOW, BRANCH)
    assert d.publish and "absent" in d.reason


def test_force_publishes_unchanged_value_with_same_change_id():
    state = announced("v1")
    forced = decide(obs("v1"), state, FLOW, BRANCH, force=True)
    assert forced.publish and forced.kind == "forced"
    assert forced.change_id == state.baseline.change_id


def test_settle_waits_for_n_further_unchanged_checks():
    state = announced("v1")
    history = []
    for expected_seen in range(3):
        d = decide(obs("v2"), state, FLOW, BRANCH, settle_checks=3)
        assert not d.publish and d.kind == "settling" and d.pending_seen == expected_seen
        state = advance(state, obs("v2"), d, "SensorFlow/x", published=False)
        history.append(state.pending.seen)
    d = decide(obs("v2"), state, FLOW, BRANCH, settle_checks=3)
    assert d.publish and d.kind == "changed" and "settled" in d.reason
    state = advance(state, obs("v2"), d, "SensorFlow/y", published=True)
    assert state.pending is None and state.baseline.value == "v2"
    assert history == [0, 1, 2]


def test_settle_restarts_when_value_moves_again():
    state = announced("v1")
    d = decide(obs("v2"), state, FLOW, BRANCH, settle_checks=1)
    state = advance(state, obs("v2"), d, "r", published=False, at="t1")
    d = decide(obs("v3"), state, FLOW, BRANCH, settle_checks=1)
    assert d.kind == "settling" and d.pending_seen == 0
    state = advance(state, obs("v3"), d, "r", published=False, at="t2")
    assert state.pending.value == "v3" and state.pending.first_seen_at == "t2"


def test_settle_keeps_first_seen_time():
    state = announced("v1")
    for at in ("t1", "t2"):
        d = decide(obs("v2"), state, FLOW, BRANCH, settle_checks=5)
        state = advance(state, obs("v2"), d, "r", published=False, at=at)
    assert state.pending.first_seen_at == "t1" and state.pending.seen == 1


def test_revert_before_settling_clears_pending_without_event():
    state = announced("v1")
    d = decide(obs("v2"), state, FLOW, BRANCH, settle_checks=2)
    state = advance(state, obs("v2"), d, "r", published=False)
    d = decide(obs("v1"), state, FLOW, BRANCH, settle_checks=2)
    assert not d.publish and d.kind == "reverted"
    state = advance(state, obs("v1"), d, "r", published=False)
    assert state.pending is None and state.baseline.value == "v1"


def test_first_check_also_settles():
    d = decide(obs("v1"), SensorState(), FLOW, BRANCH, settle_checks=1)
    assert not d.publish and d.kind == "settling"


# ------------------------------------------------------------------------------ advance


def test_failed_publish_does_not_move_baseline():
    state = announced("v1")
    d = decide(obs("v2"), state, FLOW, BRANCH)
    after = advance(state, obs("v2"), d, "SensorFlow/2", published=False, failed=True)
    assert after.baseline == state.baseline
    assert after.history[-1]["failed"] is True and after.history[-1]["published"] is False
    # and the next check still sees the change
    assert decide(obs("v2"), after, FLOW, BRANCH).publish


def test_failed_publish_after_settling_publishes_on_next_check():
    state = announced("v1")
    d = decide(obs("v2"), state, FLOW, BRANCH, settle_checks=1)
    state = advance(state, obs("v2"), d, "r", published=False)
    d = decide(obs("v2"), state, FLOW, BRANCH, settle_checks=1)
    assert d.publish
    state = advance(state, obs("v2"), d, "r", published=False, failed=True)
    assert decide(obs("v2"), state, FLOW, BRANCH, settle_checks=1).publish


def test_published_moves_baseline_and_records_run():
    state = announced("v1")
    d = decide(obs("v2"), state, FLOW, BRANCH)
    after = advance(state, obs("v2"), d, "SensorFlow/7", published=True, at="t9")
    assert after.baseline.value == "v2" and after.baseline.run == "SensorFlow/7"
    assert after.baseline.change_id == d.change_id and after.baseline.announced_at == "t9"
    assert state.baseline.value == "v1"  # input not modified


def test_unchanged_moves_nothing_but_history():
    state = announced("v1")
    d = decide(obs("v1"), state, FLOW, BRANCH)
    after = advance(state, obs("v1"), d, "SensorFlow/2", published=False)
    assert after.baseline == state.baseline and after.pending is None
    assert len(after.history) == len(state.history) + 1


def test_history_is_bounded_and_small():
    state = announced("v1")
    for i in range(30):
        o = obs("v1", objects=10**6, bytes=10**12)
        d = decide(o, state, FLOW, BRANCH)
        state = advance(state, o, d, "SensorFlow/%d" % i, published=False, history_size=10)
    assert len(state.history) == 10 and state.history[-1]["run"] == "SensorFlow/29"
    assert state.history[-1]["objects"] == 10**6
    assert len(json.dumps(state.to_dict())) < 4000


def test_state_round_trips_through_json():
    state = announced("v1")
    state = SensorState(state.baseline, Pending("v2", obs("v2").fingerprint, 1, "t"), state.history)
    again = SensorState.from_dict(json.loads(json.dumps(state.to_dict())))
    assert again.baseline == state.baseline and again.pending == state.pending
    assert again.history == state.history


# ------------------------------------------------------------------------------ listings


def test_diff_listings_counts_and_limits_keys():
    old = parse_listing(["a\t1\tt\te1", "b\t1\tt\te1", "c\t1\tt\te1"])
    new = parse_listing(["a\t1\tt\te1", "b\t2\tt\te2"] + ["n%02d\t1\tt\te" % i for i in range(25)])
    diff = diff_listings(old, new)
    assert (diff["added"], diff["removed"], diff["modified"]) == (25, 1, 1)
    assert len(diff["added_keys"]) == 20 and diff["added_keys"][0] == "n00"
    assert diff["removed_keys"] == ["c"] and diff["modified_keys"] == ["b"]
    assert diff["compared_with"] == "listing"


def test_diff_without_previous_listing_counts_all_as_added():
    diff = diff_listings(None, parse_listing(["a\t1\tt\te"]))
    assert diff["added"] == 1 and diff["compared_with"] == "nothing"


def test_listing_pack_round_trip(tmp_path):
    spool = tmp_path / "listing.tsv"
    spool.write_text("dir/a.csv\t3\t2024-01-01T00:00:00+00:00\tabc\nb\t0\tt\te\n")
    packed = pack_listing(str(spool))
    assert gzip.decompress(packed).decode().startswith("dir/a.csv")
    assert unpack_listing(packed) == read_listing_file(str(spool))
    assert unpack_listing(None) == {}


# ------------------------------------------------------------------------------ state store


@pytest.fixture
def storage(tmp_path):
    from metaflow.plugins.datastores.local_storage import LocalStorage

    return LocalStorage(str(tmp_path / ".metaflow"))


def test_state_path_per_branch():
    assert state_path("F", "proj", "user.alice") == "F/sensor_state/proj/user.alice.json"
    assert state_path("F", "proj", "test.a/b") == "F/sensor_state/proj/test.a_b.json"


def test_store_round_trip_and_branch_isolation(storage):
    main = StateStore(storage, FLOW, "proj", "user.alice")
    other = StateStore(storage, FLOW, "proj", "test.feature")
    main.save(announced("v1"), None)
    assert main.load().baseline.value == "v1"
    assert main.load().recovered_from is None
    other.save(announced("other"), None)
    assert main.load().baseline.value == "v1"


def test_missing_state_falls_back_to_runs_and_says_so(storage, monkeypatch, capsys):
    calls = []

    def fake_recover(flow_name, project, branch):
        calls.append((flow_name, project, branch))
        s = announced("v1", run="SensorFlow/5")
        s.recovered_from = "SensorFlow/5"
        return s

    monkeypatch.setattr(state_mod, "recover_from_runs", fake_recover)
    store = StateStore(storage, FLOW, "proj", BRANCH)
    state = store.load()
    assert calls == [(FLOW, "proj", BRANCH)]
    assert state.baseline.value == "v1"
    err = capsys.readouterr().err
    assert "no state object" in err and "recovered the baseline from run SensorFlow/5" in err


def test_corrupt_state_falls_back_to_runs(storage, monkeypatch, capsys):
    store = StateStore(storage, FLOW, "proj", BRANCH)
    store.save(announced("v1"), None)
    import io

    storage.save_bytes([(store.path, io.BytesIO(b"{broken"))], overwrite=True)
    monkeypatch.setattr(state_mod, "recover_from_runs", lambda *a: SensorState())
    state = store.load()
    assert state.baseline is None
    err = capsys.readouterr().err
    assert "unreadable" in err and "first check" in err


def test_quiet_load_with_known_run_does_not_walk(storage, monkeypatch, capsys):
    monkeypatch.setattr(
        state_mod, "recover_from_runs", lambda *a: pytest.fail("must not walk the history")
    )
    seen = []
    monkeypatch.setattr(
        state_mod, "recover_from_run", lambda run: seen.append(run) or announced("v1", run)
    )
    store = StateStore(storage, FLOW, "proj", BRANCH)
    state = store.load(quiet=True, baseline_run="SensorFlow/3")
    assert seen == ["SensorFlow/3"] and state.baseline.value == "v1"
    assert store.load(quiet=True).baseline is None
    assert capsys.readouterr().err == ""


def test_state_object_is_small(storage):
    store = StateStore(storage, FLOW, "proj", BRANCH)
    store.save(announced("v1"), None)
    assert len(store.object.read()[0]) < 1000


# ------------------------------------------------------------------------------ card


def test_card_shows_decision_values_pending_diff_and_chart():
    from flowproject.cards import render_sensor_card

    state = announced("v1")
    o = obs("v2", objects=3, bytes=10)
    d = decide(o, state, FLOW, BRANCH, settle_checks=2)
    after = advance(state, o, d, "SensorFlow/2", published=False)
    changes = diff_listings(
        parse_listing(["a\t1\tt\te"]), parse_listing(["a\t1\tt\te", "b\t1\tt\te"])
    )
    card = []
    render_sensor_card(
        card, o, d, after, None, "ev", False, changes=changes, settle_checks=2, branch=BRANCH
    )
    rendered = json.dumps([c.render() for c in card])
    assert "Settling, not announced yet" in rendered and "settling" in rendered
    assert "Pending change" in rendered and "seen unchanged 0 of 2" in rendered
    assert '["Previous value (baseline)", "v1"], ["Current value", "v2"]' in rendered
    assert '["Value", "v2"]' in rendered
    assert "1 added, 0 removed, 0 modified" in rendered and '[["b"]]' in rendered
    assert '"vegaChart"' in rendered and "Last 2 checks" in rendered


def test_card_lists_at_most_20_keys_per_kind():
    from flowproject.cards import changes_components

    new = parse_listing(["k%02d\t1\tt\te" % i for i in range(30)])
    text = json.dumps([c.render() for c in changes_components(diff_listings({}, new))])
    assert "first 20 of 30" in text and '["k19"]' in text and '"k20"' not in text


# ------------------------------------------------------------------------------ on_first_check


def test_first_value_can_be_accepted_without_an_event():
    o = obs("v1")
    d = decide(o, SensorState(), FLOW, BRANCH, on_first_check="accept")
    assert (d.action, d.kind, d.publish, d.moves_baseline) == ("accept", "accepted", False, True)
    assert "accepted as the baseline without an event" in d.reason
    after = advance(SensorState(), o, d, "SensorFlow/1", published=False, at="t0")
    assert after.baseline.value == "v1" and after.baseline.run == "SensorFlow/1"
    # From then on it is a baseline like any other: unchanged skips, a change publishes.
    assert decide(o, after, FLOW, BRANCH, on_first_check="accept").kind == "unchanged"
    changed = decide(obs("v2"), after, FLOW, BRANCH, on_first_check="accept")
    assert changed.publish and changed.previous_value == "v1"


def test_accepting_still_settles_and_force_still_publishes():
    o = obs("v1")
    settling = decide(o, SensorState(), FLOW, BRANCH, settle_checks=1, on_first_check="accept")
    assert settling.kind == "settling" and not settling.moves_baseline
    state = advance(SensorState(), o, settling, "SensorFlow/1", published=False, at="t0")
    settled = decide(o, state, FLOW, BRANCH, settle_checks=1, on_first_check="accept")
    assert settled.action == "accept"
    forced = decide(o, SensorState(), FLOW, BRANCH, force=True, on_first_check="accept")
    assert forced.publish


# ------------------------------------------------------------------------------ cursor


def test_cursor_is_kept_apart_from_the_baseline_and_saved_by_every_check(storage):
    """A check's cursor is stored whether or not it announced; a check without one keeps it;
    a check of another identity does not continue from it."""
    ident = {"type": "delta", "uri": "s3://b/t"}
    o = Observation("3", {}, cursor={"version": 3})
    d = decide(o, SensorState(), FLOW, BRANCH, identity=ident)
    state = advance(SensorState(), o, d, "SensorFlow/1", published=True)
    assert state.cursor == {"version": 3} and state.baseline.value == "3"
    # An unchanged check that read two more (OPTIMIZE) commits: cursor moves, baseline not.
    o = Observation("3", {}, cursor={"version": 5})
    d = decide(o, state, FLOW, BRANCH, identity=ident)
    state = advance(state, o, d, "SensorFlow/2", published=False)
    assert d.kind == "unchanged" and state.cursor == {"version": 5}
    assert state.baseline.run == "SensorFlow/1"
    state = advance(state, obs("3"), decide(obs("3"), state, FLOW, BRANCH), "r", False)
    assert state.cursor == {"version": 5}
    assert state.cursor_for(ident) == {"version": 5}
    assert state.cursor_for({"type": "delta", "uri": "s3://b/other"}) is None

    store = StateStore(storage, FLOW, None, BRANCH)
    store.save(state, None)
    assert store.load().cursor == {"version": 5}

    other = {"type": "delta", "uri": "s3://b/other"}
    d = decide(obs("1"), state, FLOW, BRANCH, identity=other)
    assert d.new_baseline
    assert advance(state, obs("1"), d, "r", published=True).cursor is None
