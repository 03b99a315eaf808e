"""One source of a running sensor: decide, record, claim, publish, commit.

A ``SourceAnnouncer`` carries what a run knows of one source (its settings, its state object,
what the deciding step read) and applies the sensor's rules to it. ``BaseFlow`` uses one for
the single ``[data]`` source and one per ``[sources.<name>]`` table, so the rules exist once
whatever the number of sources; each announcer touches only its own source's state object,
so several of them run side by side in threads.
"""

import dataclasses
import os
import sys

from .events import event_name, publish
from .exceptions import PublishError, StateConflict, StateError
from .sensor import SKIP, advance, decide, decision_options
from .sources import load_source, source_identity, watched_source
from .sources.s3_listing import diff_listings, pack_listing, read_listing_file, unpack_listing
from .state import (
    DEFAULT_SOURCE,
    STATE_WRITE_ATTEMPTS,
    StateStore,
    claim_lease_seconds,
    claim_of_another_run,
    load_listing,
    new_claim,
)

# Decisions with nothing to announce: the deciding step records them in the source's history
# and, when no source has anything to announce, the run goes straight to ``end``, with no card.
QUIET_KINDS = ("unchanged", "reverted")

# ``SourceAnnouncer.announce``'s version when the deciding step's is not known: no re-decision.
UNKNOWN_VERSION = object()


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


class SourceAnnouncer(object):
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
        identity = source_identity(self.data)
        self.identity = identity
        self.store = StateStore(
            storage,
            flow_name,
            project,
            branch,
            source=self.name,
            identity=identity if self.named else None,
        )
        # Set while deciding; the announcing step of the run gets them back as artifacts.
        self.options = None  # the decide() keyword arguments used
        self.state_version = None
        self.decided_against = None  # (state, version), within the deciding step only
        self.changes = None  # objects added/removed/modified (files_metadata)
        self.listing = None  # the gzip'd listing, when this run moves the baseline
        # Set while announcing.
        self.publish_failure = None
        self.published = None
        self.state_after = None

    @property
    def event_name(self):
        """The name this source's events are published under (evaluated in the running flow)."""
        return event_name(self.sensor)

    def say(self, text, file=None):
        """Print ``text``, naming the source when the sensor has several."""
        print(("%s: %s" % (self.name, text)) if self.named else text, file=file or sys.stdout)

    # ------------------------------------------------------------------ checking

    def cursor(self):
        """Where the source's check continues reading, for sources that keep a cursor."""
        module = load_source(self.data["type"])
        if not getattr(module, "USES_CURSOR", False):
            return None
        # Read quietly: the deciding step says where a recovered baseline came from.
        return self.store.load(quiet=True).cursor_for(self.identity)

    def check(self, data=None):
        """Open the source's session, check it once, close it.

        Parameters
        ----------
        data : dict, optional
            The source table to use (the run's bound on threads may lower its
            ``list_concurrency``); the configured one by default.

        Returns
        -------
        tuple
            ``(Observation, requests)``: ``requests`` is what the check asked the source.
        """
        data = self.data if data is None else data
        module = load_source(data["type"])
        with module.open_session(data) as session:
            observation = module.check(data, session, self.cursor())
        return observation, list(getattr(session, "requests", []))

    # ------------------------------------------------------------------ deciding

    def decide(self, observation, force=False, dry_run=False, quiet=False):
        """Compare ``observation`` with the source's baseline.

        For a listing (``files_metadata``) it also keeps what the card and the next diff need:
        ``changes`` when the decision is to announce or the change is settling, ``listing``
        when this run will move the baseline. The temporary listing file is deleted.

        Parameters
        ----------
        observation : Observation
        force : bool
            Publish even if nothing changed.
        dry_run : bool
            Decide and report, store no listing.
        quiet : bool
            Do not print where a recovered baseline came from.

        Returns
        -------
        Decision
        """
        state, self.state_version = self.store.load_versioned(quiet=quiet)
        self.decided_against = (state, self.state_version)
        self.options = decide_options(self.watched, self.project, force)
        decision = self.decide_against(state, observation, **self.options)
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

    def decide_against(self, state, observation, **decide_kwargs):
        """``decide_against`` for this source and run."""
        return decide_against(
            state, observation, self.flow_name, self.branch, self.run, **decide_kwargs
        )

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
        decided = self.decided_against
        if decided is None:
            decided = self.store.load_versioned(quiet=True, baseline_run=decision.baseline_run)
        _state, recorded = self.commit(observation, decision, *decided)
        return recorded

    # ------------------------------------------------------------------ announcing

    def event_payload(self, observation, decision, branch_name, run_id):
        """The event payload: ``{payload_key: value}``, ``change_id`` and ``previous_value``,
        the state, the run, and for a named source its name."""
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
        # Fields a source adds for consumers, e.g. a table's version to pin (sources.delta).
        for key, value in (observation.summary.get("payload") or {}).items():
            payload.setdefault(key, value)
        return payload

    def announce(self, observation, decision, version, branch_name, run_id, dry_run=False):
        """Claim, publish and commit the decision's event; record the check otherwise.

        The baseline moves only after the event was published. If publishing fails, the
        failed attempt is kept in the history, ``publish_failure`` says why and the baseline
        does not move (the next check announces again). ``dry_run`` publishes and writes
        nothing.

        Parameters
        ----------
        observation : Observation
        decision : Decision
            From the deciding step.
        version : str or None
            The state version the deciding step read (``UNKNOWN_VERSION``: not known, so
            nothing is re-decided before claiming).
        branch_name : str or None
            The ``@project`` branch, for the payload.
        run_id : str
        dry_run : bool

        Returns
        -------
        Decision
            The decision that took effect (re-made if another run wrote meanwhile);
            ``published`` is the payload with ``name`` and ``id``, or None, and
            ``state_after`` the state written (for a dry run: what it would be).
        """
        # The deciding step already said where the baseline came from; read it quietly here
        # and, without a state object, rebuild it from the one run the decision names.
        state, current_version = self.store.load_versioned(
            quiet=True, baseline_run=decision.baseline_run
        )
        name = self.event_name
        decided = decision
        if not dry_run and version is not UNKNOWN_VERSION and current_version != version:
            decision = self.redecide(decided, observation, state)
        if decision.publish and not dry_run:
            decision, state, current_version = self.claim(
                observation, decided, decision, state, current_version
            )
        if decision is not decided:
            self.say(decision.reason)
        if decision.publish:
            payload = self.event_payload(observation, decision, branch_name, run_id)
            if dry_run:
                self.say("Dry run: would publish %s with %s" % (name, payload))
            else:
                try:
                    event_id = publish(name, payload, timeout=self.sensor["publish_timeout"])
                except PublishError as e:
                    # Keep the failed attempt in the history; the baseline does not move.
                    self.state_after, decision = self.commit(
                        observation, decision, state, current_version, failed=True
                    )
                    self.publish_failure = str(e)
                    self.say(str(e), file=sys.stderr)
                    return decision
                self.published = dict(payload, name=name, id=event_id)
                self.say("Published %s (change %s)" % (name, decision.change_id))
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
            self.state_after, decision = self.commit(
                observation,
                decision,
                state,
                current_version,
                published=self.published is not None,
            )
        return decision

    def claim(self, observation, decided, decision, state, version):
        """Claim the change (a CAS write with a lease) before publishing it.

        Returns ``(decision, state, version)``: the decision is re-made after each lost
        compare-and-swap, and may no longer be to publish.
        """
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
        history write never fails a run.

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
