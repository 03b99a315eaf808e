"""The sensor's decision: compare an observation with the baseline and say what to do, and why.

Plain functions over plain data, so every rule here is unit-tested without running a flow:

- ``decide(observation, state, ...) -> Decision``: publish or skip, with the reason;
- ``advance(state, observation, decision, ...) -> state``: the state after the decision took
  effect (baseline moved only when a change was announced).
"""

import hashlib
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

PUBLISH = "publish"
ACCEPT = "accept"  # move the baseline without an event (on_first_check = "accept")
SKIP = "skip"


def change_id(flow_name, branch, value_fingerprint):
    """A stable key for a change: the same flow, branch and value always give the same id.

    Consumers drop duplicates by it (overlapping cron runs, a forced re-publish). A value that
    comes back later (A, B, A) gets its first id again, so deduplicate within a window (a few
    cron periods), not forever.
    """
    text = "%s\x00%s\x00%s" % (flow_name, branch, value_fingerprint)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:32]


@dataclass
class Baseline:
    """The last value this flow announced in one branch."""

    value: str | None
    fingerprint: str
    change_id: str
    run: str | None = None
    announced_at: str | None = None
    summary: dict[str, Any] = field(default_factory=dict)


@dataclass
class Pending:
    """A new value waiting to settle: seen unchanged ``seen`` further checks so far."""

    value: str | None
    fingerprint: str
    seen: int
    first_seen_at: str | None = None


@dataclass
class SensorState:
    """Everything a check needs from the past, in one small object (the cursor).

    Parameters
    ----------
    baseline : Baseline, optional
        None before the first announcement.
    pending : Pending, optional
        A change still settling (``[sensor] settle_checks``).
    history : list of dict
        The last observations of this branch, newest last, bounded by ``history_size``.
    """

    baseline: Baseline | None = None
    pending: Pending | None = None
    history: list[dict[str, Any]] = field(default_factory=list)
    recovered_from: str | None = None
    # A run announcing a change right now (state.Claim); stored and read by state.StateStore.
    claim: Any = None

    def to_dict(self):
        return {
            "version": 1,
            "baseline": None if self.baseline is None else vars(self.baseline),
            "pending": None if self.pending is None else vars(self.pending),
            "history": self.history,
        }

    @classmethod
    def from_dict(cls, doc):
        return cls(
            baseline=Baseline(**doc["baseline"]) if doc.get("baseline") else None,
            pending=Pending(**doc["pending"]) if doc.get("pending") else None,
            history=list(doc.get("history") or []),
        )


@dataclass(frozen=True)
class Decision:
    """What a check decided.

    Parameters
    ----------
    action : str
        ``"publish"``, ``"accept"`` (the first value becomes the baseline without an event)
        or ``"skip"``.
    kind : str
        ``first``, ``changed``, ``forced``, ``accepted``, ``unchanged``, ``settling``,
        ``reverted``.
    reason : str
        One sentence for logs and the card.
    change_id : str
        Stable id of the observed value in this flow and branch.
    previous_value : str or None
        The baseline's value (None before the first announcement or when absent).
    pending_seen : int, optional
        For ``settling``: checks the new value has been seen unchanged so far.
    baseline_run : str, optional
        Pathspec of the run that announced the baseline (where its listing is stored).
    """

    action: str
    kind: str
    reason: str
    change_id: str
    previous_value: str | None = None
    pending_seen: int | None = None
    baseline_run: str | None = None

    @property
    def publish(self):
        return self.action == PUBLISH

    @property
    def moves_baseline(self):
        """Whether the observed value becomes the baseline once this decision took effect."""
        return self.action in (PUBLISH, ACCEPT)


def _short(value, limit=80):
    if value is None:
        return "absent"
    return value if len(value) <= limit else value[: limit - 3] + "..."


def decision_options(sensor_config):
    """The ``decide`` keyword arguments that ``flowconfig.toml``'s ``[sensor]`` table sets.

    One place for them, so a flow run and ``flowproject.testing.check_once`` decide alike.
    """
    return {
        "settle_checks": sensor_config["settle_checks"],
        "on_first_check": sensor_config["on_first_check"],
    }


def decide(
    observation, state, flow_name, branch, settle_checks=0, force=False, on_first_check="publish"
):
    """Compare ``observation`` with ``state`` and decide whether to announce it.

    Parameters
    ----------
    observation : Observation
        What the source looks like now.
    state : SensorState
        The baseline (last announced value), any settling value, and history.
    flow_name, branch : str
        Identify the sensor; part of the change id.
    settle_checks : int
        Announce a new value only after it was seen unchanged this many further checks.
    force : bool
        Publish even without a change (``--force-trigger``).
    on_first_check : str
        ``"publish"``: the first value of a branch is announced like a change;
        ``"accept"``: it becomes the baseline without an event (a sensor added to data that
        downstream flows have already processed).

    Returns
    -------
    Decision
    """
    fp = observation.fingerprint
    cid = change_id(flow_name, branch, fp)
    baseline = state.baseline
    previous = None if baseline is None else baseline.value
    base_run = None if baseline is None else baseline.run
    now_text = _short(observation.value)

    def made(action, kind, reason, pending_seen=None):
        return Decision(action, kind, reason, cid, previous, pending_seen, base_run)

    if force:
        return made(PUBLISH, "forced", "forced by --force-trigger: %s" % now_text)

    if baseline is not None and baseline.fingerprint == fp:
        if state.pending is not None:
            return made(
                SKIP,
                "reverted",
                "back to the announced value %s before settling; nothing to announce" % now_text,
            )
        return made(SKIP, "unchanged", "unchanged since the last announcement: %s" % now_text)

    kind = "first" if baseline is None else "changed"
    what = (
        "first check, no baseline yet: %s" % now_text
        if baseline is None
        else "changed from %s to %s" % (_short(previous), now_text)
    )
    if settle_checks > 0:
        pending = state.pending
        seen = pending.seen + 1 if (pending is not None and pending.fingerprint == fp) else 0
        if seen < settle_checks:
            return made(
                SKIP,
                "settling",
                "%s; settling, seen unchanged %d of %d further check(s)"
                % (what, seen, settle_checks),
                pending_seen=seen,
            )
        what += " (settled over %d check(s))" % settle_checks
    if kind == "first" and on_first_check == "accept":
        return made(ACCEPT, "accepted", what + "; accepted as the baseline without an event")
    return made(PUBLISH, kind, what)


def utc_now():
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def history_entry(observation, decision, run_id, at, published, failed=False):
    """One point of the history chart: small, whatever the source's size."""
    entry = {
        "at": at,
        "run": run_id,
        "fingerprint": observation.fingerprint[:12],
        "value": _short(observation.value, 40),
        "kind": decision.kind,
        "published": published,
    }
    if failed:
        entry["failed"] = True
    for key in ("objects", "bytes"):
        if key in observation.summary:
            entry[key] = observation.summary[key]
    return entry


def advance(
    state, observation, decision, run_id, published, history_size=50, at=None, failed=False
):
    """The state after a check took effect.

    Parameters
    ----------
    state : SensorState
        The state the decision was made against.
    observation : Observation
    decision : Decision
    run_id : str
        Pathspec of this run (``SensorFlow/123``), recorded with the baseline.
    published : bool
        Whether the event was actually published. The baseline moves only then (or when
        the decision accepts the first value): a change that could not be announced stays a
        change for the next check.
    history_size : int
        How many observations the history keeps.
    at : str, optional
        ISO time of the check; now by default.
    failed : bool
        The decision was to publish but publishing failed: recorded in the history only.

    Returns
    -------
    SensorState
        A new object; ``state`` is not modified.
    """
    at = at or utc_now()
    baseline, pending = state.baseline, state.pending
    if published or decision.action == ACCEPT:
        baseline = Baseline(
            value=observation.value,
            fingerprint=observation.fingerprint,
            change_id=decision.change_id,
            run=run_id,
            announced_at=at,
            summary=dict(observation.summary),
        )
        pending = None
    elif decision.kind == "settling":
        first_seen = (
            pending.first_seen_at
            if pending is not None and pending.fingerprint == observation.fingerprint
            else at
        )
        pending = Pending(
            observation.value, observation.fingerprint, decision.pending_seen, first_seen
        )
    elif decision.kind in ("unchanged", "reverted"):
        pending = None
    history = (
        state.history + [history_entry(observation, decision, run_id, at, published, failed)]
    )[-history_size:]
    return SensorState(baseline=baseline, pending=pending, history=history)


# ------------------------------------------------------------------------------------------
# Listings (files_metadata): what changed between two announcements, for the card.
# ------------------------------------------------------------------------------------------

DIFF_KEYS_SHOWN = 20


def parse_listing(lines):
    """``{relative key: "size\tmtime\tetag"}`` from listing lines (``key\tsize\tmtime\tetag``)."""
    listing = {}
    for line in lines:
        line = line.rstrip("\n")
        if line:
            key, _, rest = line.partition("\t")
            listing[key] = rest
    return listing


def read_listing_file(path):
    """The listing a source spooled to ``path`` (one line per object)."""
    with open(path, encoding="utf-8") as f:
        return parse_listing(f)


def pack_listing(path):
    """The spooled listing at ``path`` as gzip'd bytes, to store with an announcement."""
    import gzip

    with open(path, "rb") as f:
        return gzip.compress(f.read(), compresslevel=6, mtime=0)


def unpack_listing(packed):
    """The listing stored by ``pack_listing``; an empty listing for None."""
    import gzip

    if not packed:
        return {}
    return parse_listing(gzip.decompress(packed).decode("utf-8").splitlines())


def diff_listings(previous, current, limit=DIFF_KEYS_SHOWN):
    """Objects added, removed and modified from ``previous`` to ``current``.

    Parameters
    ----------
    previous, current : dict
        From ``parse_listing``; ``previous`` is None when there is no stored listing.
    limit : int
        Keys kept per category (sorted), for the card; the counts are complete.

    Returns
    -------
    dict
        ``added``, ``removed``, ``modified`` (counts), ``*_keys`` (up to ``limit`` keys
        each) and ``compared_with`` (``"nothing"`` when there was no previous listing).
    """
    base = previous or {}
    added = sorted(k for k in current if k not in base)
    removed = sorted(k for k in base if k not in current)
    modified = sorted(k for k in current if k in base and base[k] != current[k])
    return {
        "compared_with": "nothing" if previous is None else "listing",
        "added": len(added),
        "removed": len(removed),
        "modified": len(modified),
        "added_keys": added[:limit],
        "removed_keys": removed[:limit],
        "modified_keys": modified[:limit],
    }
