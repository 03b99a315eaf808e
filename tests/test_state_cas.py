"""Overlapping runs: the sensor state is written by compare-and-swap (issue 9, promise 10).

Fast: no flow runs. The store is exercised on Metaflow's local datastore storage and on its S3
storage against the loopback moto server (conditional PutObject); the re-decision rules of
a source's check (``flowproject.source_check``) are called as a run calls them.
"""

import json
import os
import threading
import time
import uuid
from datetime import datetime, timedelta, timezone

import pytest

from flowproject import StateConflict
from flowproject import state as state_mod
from flowproject.sensor import Baseline, SensorState, advance, decide, utc_now
from flowproject.source_check import decide_against, redecide
from flowproject.sources.observation import Observation, fingerprint
from flowproject.state import Claim, StateStore, new_claim

FLOW, BRANCH = "SensorFlow", "user.alice"


def observed(value):
    return Observation(value=value, summary={})


def announced(value, run="SensorFlow/1"):
    fp = fingerprint(value)
    return SensorState(baseline=Baseline(value, fp, "cid-" + fp[:6], run, utc_now()))


def history_runs(state):
    return [h["run"] for h in state.history]


@pytest.fixture(params=["local", "s3"])
def storage(request, tmp_path, monkeypatch):
    if request.param == "local":
        from metaflow.plugins.datastores.local_storage import LocalStorage

        return LocalStorage(str(tmp_path / ".metaflow"))
    server = request.getfixturevalue("s3_server")
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", server.endpoint_url)
    for name, value in (
        ("AWS_ACCESS_KEY_ID", "testing"),
        ("AWS_SECRET_ACCESS_KEY", "testing"),
        ("AWS_DEFAULT_REGION", "us-east-1"),
    ):
        monkeypatch.setenv(name, value)
    bucket = "state-%s" % uuid.uuid4().hex[:8]
    server.client().create_bucket(Bucket=bucket)
    from metaflow.plugins.datastores.s3_storage import S3Storage

    return S3Storage("s3://%s/metaflow" % bucket)


def store_of(storage):
    return StateStore(storage, FLOW, "proj", BRANCH)


# ------------------------------------------------------------------------------ the store


def test_backend_is_conditional(storage):
    kind = type(store_of(storage).object).__name__
    assert kind == {"local": "LocalStateObject", "s3": "S3StateObject"}[storage.TYPE]


def test_save_is_compare_and_swap(storage):
    store = store_of(storage)
    state, version = store.load_versioned(quiet=True)
    assert version is None and state.baseline is None
    v1 = store.save(announced("v1"), None)
    assert v1
    # A second "first write" loses: the object exists now.
    with pytest.raises(StateConflict):
        store.save(announced("other"), None)
    v2 = store.save(announced("v2"), v1)
    assert v2 != v1
    # A write computed from v1 after v2 was written loses, and changes nothing.
    with pytest.raises(StateConflict) as raised:
        store.save(announced("stale"), v1)
    assert "changed since it was read" in str(raised.value)
    state, version = store.load_versioned(quiet=True)
    assert (state.baseline.value, version) == ("v2", v2)


def test_two_runs_read_the_same_version_no_history_entry_lost(storage):
    store = store_of(storage)
    store.save(announced("v1"), None)
    # Two runs read the same state, each records its check; today's last writer wins.
    a_state, a_version = store.load_versioned(quiet=True)
    b_state, b_version = store.load_versioned(quiet=True)

    def record(run):
        def change(state):
            entry = {"run": run, "at": utc_now(), "kind": "unchanged"}
            return SensorState(state.baseline, state.pending, state.history + [entry]), None

        return change

    store.update(record("SensorFlow/a"), a_state, a_version)
    store.update(record("SensorFlow/b"), b_state, b_version)
    assert sorted(history_runs(store.load(quiet=True))) == ["SensorFlow/a", "SensorFlow/b"]


def test_update_gives_up_after_attempts(storage, monkeypatch):
    monkeypatch.setattr(state_mod.time, "sleep", lambda s: None)
    store = store_of(storage)
    store.save(announced("v1"), None)
    calls = []

    def change_and_interfere(state):
        # Another run writes between every read and write of this one.
        calls.append(1)
        current, version = store.load_versioned(quiet=True)
        store.save(announced("w%d" % len(calls)), version)
        return announced("mine"), None

    state, version = store.load_versioned(quiet=True)
    with pytest.raises(StateConflict):
        store.update(change_and_interfere, state, version, attempts=3)
    assert len(calls) == 3


def test_claim_is_stored_read_and_cleared(storage):
    store = store_of(storage)
    claim = new_claim("SensorFlow/7", "cid-1", "v2", lease_seconds=120)
    version = store.save(announced("v1"), None, claim=claim)
    state, version = store.load_versioned(quiet=True)
    assert state.claim == claim and state.claim.live()
    store.save(announced("v2"), version)  # the commit: no claim
    assert store.load(quiet=True).claim is None


def test_corrupt_state_object_can_be_replaced_by_cas(storage, monkeypatch):
    monkeypatch.setattr(state_mod, "recover_from_runs", lambda *a: SensorState())
    store = store_of(storage)
    v1 = store.save(announced("v1"), None)
    body, _ = store.object.read()
    store.object.write(b"{broken", v1)
    state, version = store.load_versioned(quiet=True)
    assert state.baseline is None and version is not None
    store.save(announced("v2"), version)
    assert store.load(quiet=True).baseline.value == "v2"


def test_claim_expiry_and_malformed_claims():
    now = datetime.now(timezone.utc)
    claim = new_claim("SensorFlow/1", "cid", "x" * 200, lease_seconds=120, now=now)
    assert len(claim.value) == 80
    assert claim.live(now + timedelta(seconds=119))
    assert not claim.live(now + timedelta(seconds=121))
    assert Claim.from_dict({"run": "r"}) is None and Claim.from_dict("junk") is None
    assert not Claim("r", "c", None, "not a time").live()
    assert state_mod.claim_lease_seconds({"publish_timeout": 10}) == 70
    assert state_mod.claim_lease_seconds({}) == 120


def test_write_barrier_pauses_between_read_and_write(tmp_path, monkeypatch):
    from metaflow.plugins.datastores.local_storage import LocalStorage

    store = store_of(LocalStorage(str(tmp_path / ".metaflow")))
    barrier = tmp_path / "barrier"
    barrier.mkdir()
    monkeypatch.setattr(state_mod, "_writes_in_process", 0)
    monkeypatch.setenv(state_mod.WRITE_BARRIER_ENV, "%s:2" % barrier)
    store.save(announced("v1"), None)  # write 1 passes
    _, version = store.load_versioned(quiet=True)
    writer = threading.Thread(target=store.save, args=(announced("v2"), version))
    writer.start()
    deadline = time.monotonic() + 30
    while not (barrier / "write-2.waiting").exists():
        assert time.monotonic() < deadline
        time.sleep(0.02)
    assert store.load(quiet=True).baseline.value == "v1"
    (barrier / "write-2.go").touch()
    writer.join(30)
    assert store.load(quiet=True).baseline.value == "v2"


# ------------------------------------------------------------------------------ re-deciding


@pytest.fixture
def flow():
    """The decision functions of a source's check, as run SensorFlow/2 makes them: the
    ``decide`` options are kept (the ``source_options`` artifact) to re-decide alike."""

    class Run(object):
        decide_options = None

        def decide_against(self, state, observation, **options):
            self.decide_options = dict(options)
            return decide_against(state, observation, FLOW, BRANCH, "SensorFlow/2", **options)

        def redecide(self, decided, observation, state):
            return redecide(
                decided, observation, state, self.decide_options, FLOW, BRANCH, "SensorFlow/2"
            )

    return Run()


def test_live_claim_of_another_run_means_no_event(flow):
    state = announced("v1")
    decided = decide(observed("v2"), state, FLOW, BRANCH)
    state.claim = new_claim("SensorFlow/3", decided.change_id, "v2", lease_seconds=60)
    decision = flow.decide_against(state, observed("v2"))
    assert (decision.publish, decision.kind) == (False, "concurrent")
    assert "run SensorFlow/3 is announcing this change" in decision.reason
    # Our own claim (a retry of this run) does not stop us.
    state.claim = new_claim("SensorFlow/2", decided.change_id, "v2", lease_seconds=60)
    assert flow.decide_against(state, observed("v2")).publish


def test_expired_claim_is_published_again(flow):
    state = announced("v1")
    past = datetime.now(timezone.utc) - timedelta(seconds=600)
    state.claim = new_claim("SensorFlow/3", "cid", "v2", lease_seconds=60, now=past)
    decided = decide(observed("v2"), announced("v1"), FLOW, BRANCH)
    decision = flow.redecide(decided, observed("v2"), state)
    assert decision.publish and decision.kind == "changed"


def test_other_run_announced_the_same_value(flow):
    before = announced("v1", run="SensorFlow/1")
    decided = flow.decide_against(before, observed("v2"))
    assert decided.publish
    after = advance(before, observed("v2"), decided, "SensorFlow/3", published=True)
    decision = flow.redecide(decided, observed("v2"), after)
    assert (decision.publish, decision.kind) == (False, "concurrent")
    assert "run SensorFlow/3 announced this value" in decision.reason


def test_baseline_moved_elsewhere_older_observation_is_not_announced(flow):
    before = announced("v1", run="SensorFlow/1")
    decided = flow.decide_against(before, observed("v2"))
    after = announced("v3", run="SensorFlow/3")
    decision = flow.redecide(decided, observed("v2"), after)
    assert (decision.publish, decision.kind) == (False, "concurrent")
    assert "run SensorFlow/3" in decision.reason
    # An unchanged check whose baseline moved does not turn into an announcement either.
    unchanged = flow.decide_against(before, observed("v1"))
    assert not flow.redecide(unchanged, observed("v1"), after).publish


def test_history_write_by_another_run_keeps_the_decision(flow):
    before = announced("v1", run="SensorFlow/1")
    decided = flow.decide_against(before, observed("v2"))
    unchanged_check = decide(observed("v1"), before, FLOW, BRANCH)
    after = advance(before, observed("v1"), unchanged_check, "SensorFlow/3", published=False)
    decision = flow.redecide(decided, observed("v2"), after)
    assert decision.publish and decision.change_id == decided.change_id


def test_decide_against_forwards_keyword_arguments(flow):
    decision = flow.decide_against(SensorState(), observed("v1"), on_first_check="accept")
    assert decision.kind == "accepted"
    assert flow.decide_options == {"on_first_check": "accept"}
    stored = json.loads(json.dumps(flow.decide_options))
    assert stored == flow.decide_options
    assert os.environ.get(state_mod.WRITE_BARRIER_ENV) is None
