"""The sensor's decision: compare an observation with the baseline and say what to do, and why.

Plain functions over plain data, so every rule here is unit-tested without running a flow:

- ``decide(observation, state, ...) -> Decision``: publish or skip, with the reason;
- ``advance(state, observation, decision, ...) -> state``: the state after the decision took
  effect (baseline moved only when a change was announced).
"""

import hashlib
import json
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

PUBLISH = "publish"
ACCEPT = "accept"  # move the baseline without an event (on_first_check = "accept")
SKIP = "skip"

# The name of the one source of the single-source form (``[data]``): its change ids, state
# object and scope keep what they were before sources had names.
DEFAULT_SOURCE = "default"


def change_id(flow_name, branch, value_fingerprint, project=None, source=DEFAULT_SOURCE):
    """A stable key for a change: the same project, flow, branch, source and value always give
    the same id, and equal values anywhere else never do.

    Consumers drop duplicates by it (overlapping cron runs, a forced re-publish). A value that
    comes back later (A, B, A) gets its first id again, so deduplicate within a window (a few
    cron periods), not forever.

    Parameters
    ----------
    flow_name, branch : str
    value_fingerprint : str
        ``Observation.fingerprint``.
    project : str, optional
        The ``@project`` name.
    source : str
        The watched source's name (``"default"`` for the one ``[data]`` table).
    """
    text = json.dumps(
        {
            "branch": branch,
            "flow": flow_name,
            "project": project,
            "source": source,
            "value": value_fingerprint,
        },
        sort_keys=True,
        separators=(",", ":"),
    )
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
    scope : dict, optional
        Whose baseline this is: ``flow``, ``project``, ``branch`` and ``source`` (the
        source's name). None in a state written before it was recorded.
    identity : dict, optional
        What the baseline is a value of (``sources.source_identity``): a check of another
        identity starts a new baseline. None in a state written before it was recorded.
    reset : dict, optional
        Set by ``flowproject reset`` and ``./deploy --teardown``: ``at``, ``by``,
        ``to_current``. A stored state carrying it is honoured as it is (a *reset marker*):
        nothing is recovered from runs before the reset. The next check's write drops it.
    cursor : dict, optional
        Where the source's next check continues reading (``Observation.cursor``), saved by
        every check, announced or not; None for sources that read everything each time.
    """

    baseline: Baseline | None = None
    pending: Pending | None = None
    history: list[dict[str, Any]] = field(default_factory=list)
    recovered_from: str | None = None
    scope: dict[str, Any] | None = None
    identity: dict[str, Any] | None = None
    cursor: dict[str, Any] | None = None
    # A run announcing a change right now (state.Claim); stored and read by state.StateStore.
    claim: Any = None
    reset: dict[str, Any] | None = None

    def to_dict(self):
        doc = {
            "version": 1,
            "scope": self.scope,
            "identity": self.identity,
            "baseline": None if self.baseline is None else vars(self.baseline),
            "pending": None if self.pending is None else vars(self.pending),
            "history": self.history,
        }
        if self.reset is not None:
            doc["reset"] = self.reset
        if self.cursor is not None:
            doc["cursor"] = self.cursor
        return doc

    def cursor_for(self, identity):
        """The stored cursor if it was left by a check of ``identity``, else None (a cursor
        into another table's log must not be continued from)."""
        if self.cursor is None:
            return None
        if self.identity is not None and identity is not None:
            if dict(self.identity) != dict(identity):
                return None
        return self.cursor

    @classmethod
    def from_dict(cls, doc):
        return cls(
            baseline=Baseline(**doc["baseline"]) if doc.get("baseline") else None,
            pending=Pending(**doc["pending"]) if doc.get("pending") else None,
            history=list(doc.get("history") or []),
            scope=doc.get("scope"),
            identity=doc.get("identity"),
            reset=doc.get("reset"),
            cursor=doc.get("cursor"),
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
        ``first``, ``changed``, ``forced``, ``accepted``, ``absent`` (the first check found
        nothing: recorded as the baseline without an event), ``unchanged``, ``settling``,
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
    warning : str, optional
        Something the user should look at although the run succeeds (the first check found
        the source absent: a typo in ``key``?); printed in the log and shown on the card.
    new_baseline : bool
        The stored state was of another source, flow or project: it was not compared with,
        and the state after this check starts from this decision.
    scope, identity : dict, optional
        What the state written after this check is the baseline of (``SensorState``).
    """

    action: str
    kind: str
    reason: str
    change_id: str
    previous_value: str | None = None
    pending_seen: int | None = None
    baseline_run: str | None = None
    warning: str | None = None
    new_baseline: bool = False
    scope: dict[str, Any] | None = None
    identity: dict[str, Any] | None = None

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


def _field_text(value, limit=60):
    text = json.dumps(value, sort_keys=True) if not isinstance(value, str) else repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _differences(old, new):
    """``("key='a/'", "key='b/'")``: the fields of two dicts that differ, as short text."""
    names = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))

    def shown(fields):
        return ", ".join(
            "%s=%s" % (k, _field_text(fields[k])) if k in fields else "no %s" % k for k in names
        )

    return shown(old), shown(new)


def baseline_mismatch(state, scope, identity):
    """Why ``state`` is not a baseline of ``scope`` and ``identity``, or None if it is.

    A state that recorded no scope or identity (written before they were recorded) matches:
    it adopts the current ones, so an upgrade does not fire every deployed sensor once.

    Parameters
    ----------
    state : SensorState
    scope : dict
        ``flow``, ``project``, ``branch``, ``source`` of this check.
    identity : dict or None
        The watched source's identity; None compares nothing.

    Returns
    -------
    str or None
        E.g. ``the watched source changed from key='events/' to key='evnets/'``.
    """
    if state.scope is not None and scope is not None and dict(state.scope) != dict(scope):
        old, new = _differences(dict(state.scope), dict(scope))
        return "the stored baseline belongs to %s, not to %s" % (old, new)
    if state.identity is not None and identity is not None:
        if dict(state.identity) != dict(identity):
            old, new = _differences(dict(state.identity), dict(identity))
            return "the watched source changed from %s to %s" % (old, new)
    return None


def decision_options(sensor_config):
    """The ``decide`` keyword arguments that ``flowconfig.toml``'s ``[sensor]`` table sets.

    One place for them, so a flow run and ``flowproject.testing.check_once`` decide alike.
    """
    return {
        "settle_checks": sensor_config["settle_checks"],
        "on_first_check": sensor_config["on_first_check"],
    }


def decide(
    observation,
    state,
    flow_name,
    branch,
    settle_checks=0,
    force=False,
    on_first_check="publish",
    project=None,
    source=DEFAULT_SOURCE,
    identity=None,
    absent_message=None,
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
        downstream flows have already processed). Either way a first check that finds the
        source absent publishes nothing: absent becomes the baseline, with a warning.
    project : str, optional
        The ``@project`` name; part of the change id and of the state's scope.
    source : str
        The watched source's name; part of the change id and of the state's scope.
    identity : dict, optional
        The watched source's identity (``sources.source_identity``). A state of another
        identity, flow, project or branch is not compared with: the check starts a new
        baseline and the reason says why.
    absent_message : str, optional
        What absent means for this source (``no objects under s3://...``), for the warning.

    Returns
    -------
    Decision
    """
    fp = observation.fingerprint
    cid = change_id(flow_name, branch, fp, project=project, source=source)
    scope = {"flow": flow_name, "project": project, "branch": branch, "source": source}
    mismatch = baseline_mismatch(state, scope, identity)
    if mismatch is not None:
        # Another source's history still tells this branch's story; another flow's does not.
        same_scope = state.scope is None or dict(state.scope) == scope
        state = SensorState(history=state.history if same_scope else [])
    baseline = state.baseline
    previous = None if baseline is None else baseline.value
    base_run = None if baseline is None else baseline.run
    now_text = _short(observation.value)

    def made(action, kind, reason, pending_seen=None, warning=None):
        if mismatch is not None:
            reason = "%s, so this starts a new baseline: %s" % (mismatch, reason)
        return Decision(
            action,
            kind,
            reason,
            cid,
            previous,
            pending_seen,
            base_run,
            warning=warning,
            new_baseline=mismatch is not None,
            scope=scope,
            identity=identity,
        )

    if force:
        return made(PUBLISH, "forced", "forced by --force-trigger: %s" % now_text)

    if baseline is None and observation.absent:
        # An event saying "nothing is there" would start a training run on nothing; a typo
        # in the key looks exactly like this, so say what was absent.
        warning = "the first check found the source absent: %s" % (absent_message or "no value")
        return made(
            ACCEPT,
            "absent",
            "first check, no baseline yet: absent; recorded as the baseline without an event "
            "(its appearance will be announced)",
            warning=warning,
        )

    if baseline is not None and baseline.fingerprint == fp:
        if state.pending is not None:
            return made(
                SKIP,
                "reverted",
                "back to the announced value %s before settling; nothing to announce" % now_text,
            )
        return made(SKIP, "unchanged", "unchanged since the last announcement: %s" % now_text)

    # A source that could not tell the value without its lost cursor (an expired snapshot,
    # a cleaned-up log) says so: compared with nothing, the check is a first check.
    cannot_tell = observation.summary.get("cannot_tell") if baseline is not None else None
    kind = "first" if baseline is None or cannot_tell else "changed"
    if baseline is None:
        what = "first check, no baseline yet: %s" % now_text
    elif cannot_tell:
        what = (
            "cannot tell whether the data changed since the announced %s (%s), so this is "
            "a first check: %s" % (_short(previous), cannot_tell, now_text)
        )
    else:
        what = "changed from %s to %s" % (_short(previous), now_text)
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
    if decision.new_baseline:
        baseline, pending = None, None  # the stored ones were of another source
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
    history = state.history
    if decision.new_baseline and state.scope is not None and decision.scope is not None:
        if dict(state.scope) != dict(decision.scope):
            history = []  # another flow's or project's checks
    history = (history + [history_entry(observation, decision, run_id, at, published, failed)])[
        -history_size:
    ]
    cursor = state.cursor
    if decision.new_baseline:
        cursor = None  # left by a check of another source
    if observation.cursor is not None:
        cursor = observation.cursor
    return SensorState(
        baseline=baseline,
        pending=pending,
        history=history,
        scope=decision.scope if decision.scope is not None else state.scope,
        identity=decision.identity if decision.identity is not None else state.identity,
        cursor=cursor,
    )
