"""Hostile variants of a real state object (issue 19): edited, copied, of the wrong shape.

A seeded, bounded loop: each variant of the state a real check wrote is put where the sensor
reads it, then a check of the unchanged source, ``status_of`` and the CLI's status read it.
Asserted: no exception escapes but the documented ones; a variant the sensor accepts as its
state is decided on it (no event while the value is the announced one); a variant it does not
accept is said to be unreadable and the baseline is recovered (here: from a run that recorded
it), never taken as "no baseline" silently; stored text never reaches a message as markup.
"""

import copy
import json
import random

import pytest
from json_paths import at, paths
from test_source_check import SENSOR, LogSource

from flowproject import sources as sources_mod
from flowproject import state as state_mod
from flowproject.config import WatchedSource
from flowproject.operations import status_of
from flowproject.source_check import SourceCheck
from flowproject.state import StateStore

FLOW, PROJECT, BRANCH = "SensorFlow", "lake", "user.tester"
HOSTILE = [
    None,
    True,
    -1,
    2**70,
    1.5,
    "",
    "<script>alert(1)</script>",
    "[/bold]user.[red]",
    "\x1b[31mred",
    [],
    [1, "a"],
    {},
    {"value": 5},
]


@pytest.fixture
def source(monkeypatch):
    import sys

    log = LogSource(versions=7)
    monkeypatch.setitem(sys.modules, "fake_log_source", log.module())
    monkeypatch.setitem(sources_mod.SOURCE_TYPES, "log", "fake_log_source")
    return log


@pytest.fixture
def storage(tmp_path):
    from metaflow.plugins.datastores.local_storage import LocalStorage

    return LocalStorage(str(tmp_path / ".metaflow"))


def a_check(storage, run):
    watched = WatchedSource("default", {"type": "log", "uri": "s3://b/t"}, dict(SENSOR))
    return SourceCheck(watched, FLOW, PROJECT, BRANCH, run, storage)


def variant(doc, rng):
    """``doc`` with one to three values replaced, removed or retyped."""
    doc = copy.deepcopy(doc)
    for _ in range(rng.randint(1, 3)):
        where = rng.choice([p for p in paths(doc) if p])
        parent = at(doc, where[:-1])
        if isinstance(parent, dict) and rng.random() < 0.25:
            parent.pop(where[-1], None)
        else:
            parent[where[-1]] = copy.deepcopy(rng.choice(HOSTILE))
    return doc


def test_hostile_variants_of_a_real_state_object(storage, source, monkeypatch, capsys):
    first = a_check(storage, "SensorFlow/1")
    first.check_and_decide()
    first.commit(first.observation, first.decision, *first.decided_against, published=True)
    store = StateStore(storage, FLOW, PROJECT, BRANCH)
    for n in range(2, 4):  # some history
        a_check(storage, "SensorFlow/%d" % n).check_and_decide()
    doc = store.read_raw()
    record = first.record
    # Recovery reads what run 1 recorded, as a real run's sensor_records would give it.
    recovered = state_mod.SensorState.from_dict(
        {k: v for k, v in record.items() if k not in ("written_at", "written_by")}
    )
    recovered.recovered_from = "SensorFlow/1"
    monkeypatch.setattr(state_mod, "recover_from_runs", lambda *a: copy.deepcopy(recovered))

    rng = random.Random(19)
    outcomes = {"accepted": 0, "unreadable": 0}
    for n in range(150):
        hostile = variant(doc, rng)
        with open(store.object.full_path, "w") as f:
            json.dump(hostile, f)
        capsys.readouterr()
        check = a_check(storage, "SensorFlow/v%d" % n)
        decision = check.check_and_decide()
        said = capsys.readouterr()
        if "is unreadable" in said.err:
            outcomes["unreadable"] += 1
            assert "recovered the baseline from run SensorFlow/1" in said.err
            assert not decision.publish, (hostile, decision.reason)
        else:
            outcomes["accepted"] += 1
            stored = (hostile.get("baseline") or {}).get("fingerprint")
            same = all(hostile.get(k) == doc[k] for k in ("scope", "identity"))
            if same and stored == record["baseline"]["fingerprint"]:
                # The stored baseline is of this source and value: nothing to announce.
                assert not decision.publish, (hostile, decision.reason)
                outcomes["same baseline"] = outcomes.get("same baseline", 0) + 1
        status = status_of(store)  # never raises on what a person may have written
        json.dumps(status)
        for text in (said.out, said.err):
            assert "\x1b[" not in text
    # Both kinds of variant were met, so neither branch of the assertions is vacuous.
    assert outcomes["accepted"] >= 20 and outcomes["unreadable"] >= 20, outcomes
    print(outcomes)
    assert outcomes["same baseline"] >= 10, outcomes
