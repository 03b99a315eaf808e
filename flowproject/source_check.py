"""One source's check within one run, from the read of its state to the commit of the next.

A ``SourceCheck`` is the whole life of a check of one source: read the state, check the
source, decide, then either record a quiet check or claim, publish and commit. The flow
(``BaseFlow``) runs one per configured source (one ``[data]`` table is the source named
``default``), in threads, and only wires its steps to them; so the rules exist once whatever
the number of sources, and each check touches only its own source's state object.

What a source's next check depends on (baseline, identity, cursor, settling count) is one
record: the state object. Every write of it is also kept as the ``sensor_records`` artifact
of the step that made it (``record``), so a lost state object is rebuilt from the newest run
whose step recorded that source (``state.recover_from_runs``), whatever happened to the
other sources or to ``end`` in that run.
"""

import dataclasses
import os
import sys
import time

from .changes import announcement_manifest
from .events import event_name, publish
from .exceptions import PublishError, SourceIncomplete, StateConflict, StateError
from .lines import say
from .sensor import SKIP, advance, decide, decision_options
from .sources import failure_text, observe, source_identity, watched_source
from .sources.s3_listing import diff_listings, pack_listing, read_listing_file, unpack_listing
from .state import (
    DEFAULT_SOURCE,
    STATE_WRITE_ATTEMPTS,
    StateStore,
    claim_lease_seconds,
    claim_of_another_run,
    load_listing,
    new_claim,
    state_record,
)

# Decisions with nothing to announce: the deciding step records them in the source's history
# and, when no source has anything to announce, the run goes straight to ``end``, with no card.
QUIET_KINDS = ("unchanged", "reverted")

# A source reading a long log stops this long before its time is up, to commit its progress.
DEADLINE_MARGIN = 0.1  # of source_timeout, at most MAX_DEADLINE_MARGIN seconds
MAX_DEADLINE_MARGIN = 30.0


def decide_options(watched, project, force=False):
    """The ``decide`` keyword arguments of one source: its settings, identity and name.

    Parameters
    ----------
    watched : config.WatchedSource
    project : str or None
        The ``@project`` name.
    force : bool
        As ``--force-trigger``.
    """
    return dict(
        force=force,
        **decision_options(watched.sensor),
        **watched_source(watched.data, project, source=watched.name),
    )


def decide_against(state, observation, flow_name, branch, run, **decide_kwargs):
    """``decide()`` for one run, aware of other runs announcing right now.

    A live claim of another run (see ``flowproject.state``) turns a decision to publish into
    ``concurrent``: that run is announcing, this one publishes nothing.

    Parameters
    ----------
    state : SensorState
    observation : Observation
    flow_name, branch : str
    run : str
        This run's pathspec.
    **decide_kwargs
        Passed to ``decide()`` untouched (``force``, ``settle_checks``, ``source``, ...).

    Returns
    -------
    Decision
    """
    decision = decide(observation, state, flow_name, branch, **decide_kwargs)
    claim = claim_of_another_run(state, run)
    if decision.publish and not decide_kwargs.get("force") and claim is not None:
        what = "this change" if claim.change_id == decision.change_id else "a change"
        decision = dataclasses.replace(
            decision,
            action=SKIP,
            kind="concurrent",
            reason="run %s is announcing %s (%s, claimed until %s); this check publishes "
            "nothing, the next one compares again"
            % (claim.run, what, claim.value, claim.expires_at),
        )
    return decision


def redecide(decided, observation, state, options, flow_name, branch, run):
    """The decision after another run wrote the state that ``decided`` was made against.

    Only the change this run decided to announce, against the baseline it saw, may still be
    published: if the baseline moved meanwhile, this run's observation may be older than the
    other run's, so it publishes nothing and the next check compares again.

    Parameters
    ----------
    decided : Decision
        The decision made against the older state.
    observation : Observation
    state : SensorState
        The state as it is now.
    options : dict
        The ``decide`` keyword arguments ``decided`` was made with.
    flow_name, branch, run : str
        As for ``decide_against``.

    Returns
    -------
    Decision
    """
    fresh = decide_against(state, observation, flow_name, branch, run, **(options or {}))
    if decided.kind == "forced" or fresh.kind == "concurrent":
        return fresh
    baseline = state.baseline
    moved = (None if baseline is None else baseline.run) != decided.baseline_run
    reason = None
    if moved and baseline is not None and baseline.fingerprint == observation.fingerprint:
        if decided.publish:
            reason = "run %s announced this value while this run was checking: %s" % (
                baseline.run,
                fresh.reason,
            )
    elif fresh.moves_baseline and (moved or not decided.moves_baseline):
        reason = (
            "the sensor state was changed by %s while this run was checking; this run's "
            "observation may be older, so it announces nothing (the next check compares "
            "again)" % ("run %s" % baseline.run if moved and baseline else "another run")
        )
    if reason is None:
        return fresh
    return dataclasses.replace(fresh, action=SKIP, kind="concurrent", reason=reason)


def check_deadline(timeout, started=None):
    """The ``time.monotonic()`` instant a source reading a long log stops at, leaving time
    to commit its progress before ``timeout`` seconds from ``started`` (now) are up."""
    started = time.monotonic() if started is None else started
    return started + timeout - min(MAX_DEADLINE_MARGIN, timeout * DEADLINE_MARGIN)


class SourceCheck(object):
    """The sensor's rules applied to one source within one run.

    Parameters
    ----------
    watched : config.WatchedSource
        The source's name, data table and the ``[sensor]`` settings that apply to it.
    flow_name, project, branch : str
        Whose baseline: the running flow, its ``@project`` and branch.
    run : str
        This run's pathspec (``SensorFlow/12``), as recorded in the state.
    storage : DataStoreStorage
        Where the state objects live (``state.datastore_storage``).
    """

    def __init__(self, watched, flow_name, project, branch, run, storage):
        self.watched = watched
        self.name, self.data, self.sensor = watched
        self.flow_name, self.project, self.branch, self.run = flow_name, project, branch, run
        self.named = self.name != DEFAULT_SOURCE
        self.identity = source_identity(self.data)
        self.store = StateStore(
            storage,
            flow_name,
            project,
            branch,
            source=self.name,
            identity=self.identity if self.named else None,
        )
        # What the deciding step knew; the announcing step gets them back from artifacts.
        self.observation = None
        self.decision = None
        self.options = None  # the decide() keyword arguments used
        self.state_version = None
        self.decided_against = None  # (state, version), within the deciding step only
        self.requests = []
        self.changes = None  # objects added/removed/modified (files_metadata)
        self.listing = None  # the gzip'd listing, when this run moves the baseline
        # What the check led to.
        self.failure = None  # why the check or its event failed
        self.publish_failure = None
        self.published = None
        self.state_after = None
        self.record = None  # the state this run wrote (state.state_record), an artifact

    @property
    def event_name(self):
        """The name this source's events are published under (evaluated in the running flow)."""
        return event_name(self.sensor)

    def say(self, text, file=None):
        """Print ``text`` as whole lines, naming the source when the sensor has several."""
        say(("%s: %s" % (self.name, text)) if self.named else text, file)

    # ------------------------------------------------------------------ the deciding step

    def check_and_decide(self, force=False, dry_run=False, data=None, timeout=None):
        """Read the state, check the source, decide; record a quiet check.

        Parameters
        ----------
        force : bool
            Publish even if nothing changed.
        dry_run : bool
            Decide and report, write nothing.
        data : dict, optional
            The source table to use (the run's bound on threads may lower its
            ``list_concurrency``); the configured one by default.
        timeout : float, optional
            Seconds the check may take (``[sensor] source_timeout``): a source reading a
            long log stops before and its progress is kept.

        Returns
        -------
        Decision
            Also ``self.decision``; ``self.observation`` has no ``detail``.
        """
        started = time.monotonic()
        state, self.state_version = self.store.load_versioned()
        self.decided_against = (state, self.state_version)
        self.options = decide_options(self.watched, self.project, force)
        deadline = None if timeout is None else check_deadline(timeout, started)
        scope = {
            "flow": self.flow_name,
            "project": self.project,
            "branch": self.branch,
            "source": self.name,
        }
        try:
            observation, self.requests = observe(
                self.data if data is None else data, state, self.identity, scope, deadline
            )
        except SourceIncomplete as e:
            if not dry_run and e.cursor is not None:
                self.keep_progress(e.cursor, state, self.state_version)
            raise
        decision = self.decide(observation, state, dry_run=dry_run)
        self.say(decision.reason)
        if self.is_quiet(decision, dry_run):
            recorded = self.record_quiet(observation, decision)
            if recorded is not decision:
                self.say(recorded.reason)
            decision = recorded
        self.observation = dataclasses.replace(observation, detail=None)
        self.decision = decision
        return decision

    def decide(self, observation, state, dry_run=False):
        """Compare ``observation`` with ``state`` (read by this check) and keep what the
        announcing step and the card need.

        For a listing (``files_metadata``): ``changes`` when the decision is to announce or
        the change is settling, ``listing`` when this run will move the baseline. The
        temporary listing file is deleted.
        """
        decision = decide_against(
            state, observation, self.flow_name, self.branch, self.run, **self.options
        )
        if decision.warning:
            self.say("Warning: %s" % decision.warning)
        spool = observation.detail
        if isinstance(spool, str) and os.path.exists(spool):
            try:
                if decision.moves_baseline or decision.kind == "settling":
                    previous = load_listing(decision.baseline_run, source=self.name)
                    self.changes = diff_listings(
                        None if previous is None else unpack_listing(previous),
                        read_listing_file(spool),
                    )
                    if decision.moves_baseline and not dry_run:
                        self.listing = pack_listing(spool)
            finally:
                os.unlink(spool)
        return decision

    def redecide(self, decided, observation, state):
        """``redecide`` for this source and run, with the options it decided with."""
        return redecide(
            decided, observation, state, self.options, self.flow_name, self.branch, self.run
        )

    def is_quiet(self, decision, dry_run=False):
        """Whether the check has nothing to announce and nothing to show on a card."""
        return decision.kind in QUIET_KINDS and not decision.new_baseline and not dry_run

    def record_quiet(self, observation, decision):
        """Record an ``unchanged`` or ``reverted`` check in the source's history.

        A compare-and-swap write that never fails the run.

        Returns
        -------
        Decision
            The decision recorded: re-made if another run wrote meanwhile.
        """
        _state, recorded = self.commit(observation, decision, *self.decided_against)
        return recorded

    def keep_progress(self, cursor, state, version):
        """Store the cursor a source that ran out of time reached, and nothing else.

        No event, the baseline and the settling count are kept: the next check continues
        reading from ``cursor``. A write that never fails the run (the check has failed).
        """

        def change(current):
            kept = dataclasses.replace(current, cursor=cursor, recovered_from=None)
            return kept, claim_of_another_run(current, self.run)

        try:
            self.state_after, _ = self.store.update(change, state, version)
            self.record = state_record(self.state_after, self.run)
        except StateError as e:
            self.say("Sensor state: the progress of this check was not kept: %s" % e, sys.stderr)

    # ------------------------------------------------------------------ the announcing step

    def resume(self, observation, decision, version, options):
        """Continue in the announcing step what ``check_and_decide`` decided in the deciding
        step (from that step's artifacts)."""
        self.observation, self.decision = observation, decision
        self.state_version, self.options = version, options
        return self

    def event_payload(self, branch_name, run_id):
        """The event payload: ``{payload_key: value}``, ``change_id`` and ``previous_value``,
        the state, the run, for a named source its name, and ``changes_url`` and
        ``changes_count`` when the announcement wrote a manifest (``flowproject.changes``)."""
        observation, decision = self.observation, self.decision
        payload = {
            self.sensor["payload_key"]: observation.payload_value,
            "change_id": decision.change_id,
            "previous_value": "" if decision.previous_value is None else decision.previous_value,
            "state": "absent" if observation.absent else "present",
            "flow": self.flow_name,
            "branch": branch_name or "",
            "run_id": str(run_id),
        }
        if self.named:
            payload["source"] = self.name
        payload.update(getattr(self, "manifest", None) or {})
        # Fields a source adds for consumers, e.g. a table's version to pin (sources.delta).
        for key, value in (observation.summary.get("payload") or {}).items():
            payload.setdefault(key, value)
        return payload

    def announce(self, branch_name, run_id, dry_run=False):
        """Claim, publish and commit the decided event; record the check otherwise.

        The baseline moves only after the event was published. If publishing fails, the
        failed attempt is kept in the history, ``publish_failure`` says why and the baseline
        does not move (the next check announces again). ``dry_run`` publishes and writes
        nothing.

        Parameters
        ----------
        branch_name : str or None
            The ``@project`` branch, for the payload.
        run_id : str
        dry_run : bool

        Returns
        -------
        Decision
            The decision that took effect (re-made if another run wrote meanwhile), also
            ``self.decision``; ``published`` is the payload with ``name`` and ``id``, or
            None, and ``state_after`` the state written (for a dry run: what it would be).
        """
        observation, decided = self.observation, self.decision
        # The deciding step already said where the baseline came from; read it quietly here
        # and, without a state object, rebuild it from the one run the decision names.
        state, current_version = self.store.load_versioned(
            quiet=True, baseline_run=decided.baseline_run
        )
        decision = decided
        if not dry_run and current_version != self.state_version:
            decision = self.redecide(decided, observation, state)
        if decision.publish and not dry_run:
            decision, state, current_version = self.claim(decided, decision, state, current_version)
        if decision is not decided:
            self.say(decision.reason)
        self.decision = decision
        if decision.publish and not dry_run:
            self.manifest = announcement_manifest(self)  # what changed, for the triggered run
        if decision.publish:
            payload = self.event_payload(branch_name, run_id)
            if dry_run:
                self.say("Dry run: would publish %s with %s" % (self.event_name, payload))
            else:
                try:
                    event_id = publish(
                        self.event_name, payload, timeout=self.sensor["publish_timeout"]
                    )
                except PublishError as e:
                    # Keep the failed attempt in the history; the baseline does not move.
                    self.state_after, self.decision = self.commit(
                        observation, decision, state, current_version, failed=True
                    )
                    self.publish_failure = self.failure = str(e)
                    self.say(str(e), file=sys.stderr)
                    return self.decision
                self.published = dict(payload, name=self.event_name, id=event_id)
                self.say("Published %s (change %s)" % (self.event_name, decision.change_id))
        if dry_run:
            self.state_after = advance(
                state,
                observation,
                decision,
                self.run,
                self.published is not None,
                self.sensor["history_size"],
            )
            self.say("Dry run: the sensor state was not changed.")
        else:
            self.state_after, self.decision = self.commit(
                observation,
                decision,
                state,
                current_version,
                published=self.published is not None,
            )
        return self.decision

    @property
    def announced(self):
        """What this run made the source's baseline (``{value, change_id, identity}``), or
        None."""
        decision = self.decision
        if self.record is None or decision is None or not decision.moves_baseline:
            return None
        if self.publish_failure:
            return None
        return {
            "value": self.observation.value,
            "change_id": decision.change_id,
            "identity": decision.identity,
        }

    def claim(self, decided, decision, state, version):
        """Claim the change (a CAS write with a lease) before publishing it.

        Returns ``(decision, state, version)``: the decision is re-made after each lost
        compare-and-swap, and may no longer be to publish.
        """
        observation = self.observation
        lease = claim_lease_seconds(self.sensor)
        for _attempt in range(STATE_WRITE_ATTEMPTS):
            claim = new_claim(self.run, decision.change_id, observation.value, lease)
            try:
                return decision, state, self.store.save(state, version, claim)
            except StateConflict:
                state, version = self.store.load_versioned(
                    quiet=True, baseline_run=decided.baseline_run
                )
                decision = self.redecide(decided, observation, state)
                if not decision.publish:
                    return decision, state, version
        raise StateConflict(
            "Could not claim change %s: the sensor state of branch %s kept changing (%d "
            "attempts); nothing was published"
            % (decision.change_id, self.store.branch, STATE_WRITE_ATTEMPTS)
        )

    def commit(self, observation, decision, state, version, published=False, failed=False):
        """Record the check in the state (CAS, retried on the re-read state); clear our claim.

        A run that published moves the baseline whatever others wrote meanwhile, retrying
        until it can. A run that did not re-decides on the re-read state, and after
        ``STATE_WRITE_ATTEMPTS`` lost writes drops its history entry with a warning: a
        history write never fails a run. What was written is also ``self.record``.

        Returns
        -------
        tuple
            ``(state written, decision recorded)``.
        """
        recorded = {"decision": decision}

        def change(current):
            if current is not state and not published and not failed:
                recorded["decision"] = self.redecide(decision, observation, current)
            other = claim_of_another_run(current, self.run)
            new_state = advance(
                current,
                observation,
                recorded["decision"],
                self.run,
                published,
                self.sensor["history_size"],
                failed=failed,
            )
            return new_state, other

        attempts = STATE_WRITE_ATTEMPTS * (3 if published else 1)
        try:
            new_state, _version = self.store.update(
                change, state, version, attempts=attempts, baseline_run=decision.baseline_run
            )
        except StateError as e:
            if published:
                raise StateError(
                    "Published change %s, but could not record it in the sensor state (%s); "
                    "the next check will publish it again with the same change id"
                    % (decision.change_id, e)
                ) from None
            self.say("Sensor state: this check's history entry was dropped: %s" % e, sys.stderr)
            new_state, _ = change(state)
            return new_state, recorded["decision"]
        self.record = state_record(new_state, self.run)
        return new_state, recorded["decision"]

    def fail(self, error, timeout=None):
        """Record why this source's check failed (``error`` from the check's thread)."""
        from .bounded import JobTimeout

        if isinstance(error, JobTimeout):
            self.failure = (
                "check failed: it did not finish within [sensor] source_timeout = %d seconds"
                % timeout
            )
        elif isinstance(error, SourceIncomplete):
            self.failure = "check incomplete: %s (%s)" % (
                failure_text(error),
                "the progress made is kept: the next check continues from there"
                if self.record is not None
                else "no progress could be kept",
            )
        else:
            self.failure = "check failed: %s" % failure_text(error)
        self.say(self.failure, file=sys.stderr)
        return self.failure


__all__ = ["SourceCheck", "decide_against", "decide_options", "redecide"]
