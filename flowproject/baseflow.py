"""``BaseFlow``: what every flow of the project shares.

It loads ``flowconfig.toml`` (validated before any step runs) and offers the sensor's
operations as short methods, so flow files read like the story they tell:

- ``query()``: check the configured source once, returning an ``Observation``;
- ``decide_change(observation)``: compare it with this branch's baseline;
- ``route_check(...)``: record a check with nothing to announce and go straight to ``end``,
  or go on to the announcing step;
- ``announce(...)``: publish the change as an Argo Event, move the baseline, and show the
  check on the step's ``sensor`` card;
- ``fail_if_unpublished()``: fail the run (in ``end``) when the announcing step could not
  publish.
"""

import dataclasses
import inspect
import os
import sys
from contextvars import ContextVar

from metaflow import Config, FlowSpec, current

from .config import parse_flowconfig
from .decorators import CARD_ID, SourceDecoratorError, active_session, config_data
from .events import event_name, publish
from .exceptions import PublishError, StateConflict, StateError
from .sensor import SKIP, advance, decide, decision_options
from .sources import source_identity, watched_source
from .sources.s3_listing import diff_listings, pack_listing, read_listing_file, unpack_listing
from .state import (
    STATE_WRITE_ATTEMPTS,
    StateStore,
    claim_lease_seconds,
    claim_of_another_run,
    datastore_storage,
    load_listing,
    new_claim,
)

# Decisions with nothing to announce: the deciding step records them in the branch's history
# and the run goes straight to ``end``, with no card (most checks of a sensor are these).
QUIET_KINDS = ("unchanged", "reverted")

# The (state, version) the running step decided against. Kept here, not on the flow object:
# everything set on the flow becomes an artifact, and only the route needs it again.
_decided_against = ContextVar("flowproject_decided_against", default=None)


def flowconfig_next_to_flow(context):
    """The default ``flowconfig.toml``: the one next to the flow file, whatever the current
    folder (Metaflow would open a relative default from the current folder).

    Parameters
    ----------
    context : ParameterContext
        Given by Metaflow; its ``flow_name`` names the flow class.
    """
    return os.path.join(_flow_folder(context.flow_name), "flowconfig.toml")


def _flow_folder(flow_name):
    """The folder of the file defining the flow class ``flow_name`` (the script being run)."""
    main = sys.modules.get("__main__")
    candidates = [getattr(main, flow_name, None)] + _subclasses(BaseFlow)
    for cls in candidates:
        if isinstance(cls, type) and cls.__name__ == flow_name:
            try:
                return os.path.dirname(os.path.abspath(inspect.getfile(cls)))
            except (TypeError, OSError):
                break
    main_file = getattr(main, "__file__", None)
    return os.path.dirname(os.path.abspath(main_file)) if main_file else os.getcwd()


def _subclasses(cls):
    found = []
    for sub in cls.__subclasses__():
        found += [sub] + _subclasses(sub)
    return found


class BaseFlow(FlowSpec):
    """A FlowSpec configured by ``flowconfig.toml``: by default the one next to the flow file.

    Use ``python <flow>.py --config flowconfig PATH run`` to run with another file.
    """

    flowconfig = Config(
        "flowconfig",
        default=flowconfig_next_to_flow,
        parser=parse_flowconfig,
        # Metaflow appends "[default: ...]" to the help without a space.
        help="The sensor's settings: by default the flowconfig.toml next to the flow file. ",
    )

    # ------------------------------------------------------------------ checking the source

    def query(self):
        """Check the configured source once.

        Must run in a step decorated with ``@source``, ``@s3`` or ``@snowflake``.

        Returns
        -------
        Observation
            The comparable value (``None`` when absent) and a small summary.
        """
        active = active_session()
        if active is None:
            raise SourceDecoratorError(
                "self.query() was called in step '%s', which has no data source: add "
                "@source (or @s3 / @snowflake) above @step." % current.step_name
            )
        module, data, session = active
        cursor = None
        if getattr(module, "USES_CURSOR", False):
            # Read quietly: the deciding step says where a recovered baseline came from.
            state = self.state_store().load(quiet=True)
            cursor = state.cursor_for(source_identity(data))
        return module.check(data, session, cursor)

    # ------------------------------------------------------------------ baseline and decision

    def sensor_branch(self):
        """The ``@project`` branch whose baseline this run reads and moves (``default`` without
        ``@project``)."""
        return current.get("branch_name", None) or "default"

    def state_store(self):
        """The ``StateStore`` of this flow's project branch."""
        return StateStore(
            datastore_storage(self),
            current.flow_name,
            current.get("project_name", None),
            self.sensor_branch(),
        )

    def watched_source(self):
        """What this branch's baseline is of, as ``decide`` keyword arguments
        (``sources.watched_source``)."""
        return watched_source(config_data(self), current.get("project_name", None))

    def decide_change(self, observation, force=False, dry_run=False):
        """Compare ``observation`` with this branch's baseline.

        For a listing (``files_metadata``) it also keeps what the card and the next diff
        need, and nothing more: when the decision is to announce or the change is settling,
        the objects added, removed and modified since the last announced listing
        (``self.changes``); when this run will announce, the gzip'd listing itself
        (``self.listing``). The temporary listing file is deleted either way, and
        ``self.observation`` no longer points at it.

        Parameters
        ----------
        observation : Observation
            From ``query()``.
        force : bool
            Publish even if nothing changed.
        dry_run : bool
            Decide and report, store no listing.

        Returns
        -------
        Decision
            Also stored as artifacts by the caller; its ``reason`` says why.
        """
        state, self.state_version = self.state_store().load_versioned()
        _decided_against.set((state, self.state_version))
        decision = self.decide_against(
            state,
            observation,
            force=force,
            **decision_options(self.flowconfig.sensor),
            **self.watched_source(),
        )
        if decision.warning:
            print("Warning: %s" % decision.warning)
        spool = observation.detail
        if isinstance(spool, str) and os.path.exists(spool):
            try:
                if decision.moves_baseline or decision.kind == "settling":
                    previous = load_listing(decision.baseline_run)
                    self.changes = diff_listings(
                        None if previous is None else unpack_listing(previous),
                        read_listing_file(spool),
                    )
                    if decision.moves_baseline and not dry_run:
                        self.listing = pack_listing(spool)
            finally:
                os.unlink(spool)
            if getattr(self, "observation", None) is observation:
                self.observation = dataclasses.replace(observation, detail=None)
        return decision

    def route_check(self, observation, decision, dry_run=False):
        """Where the run goes after deciding: ``"end"`` when there is nothing to announce,
        else ``"announce"``.

        An ``unchanged`` or ``reverted`` check (not a dry run) is recorded in the branch's
        history here, by a compare-and-swap write that never fails the run, and the run goes
        straight to ``end``: no card, no other write. Every other decision (to publish,
        accept, settle, a dry run, ...) goes to the announcing step, which shows it on the card.

        Parameters
        ----------
        observation : Observation
        decision : Decision
            From ``decide_change()``.
        dry_run : bool

        Returns
        -------
        str
            ``"end"`` or ``"announce"``, the condition of the step's ``self.next({...})``.
        """
        if decision.kind not in QUIET_KINDS or decision.new_baseline or dry_run:
            return "announce"
        store = self.state_store()
        decided = _decided_against.get()
        if decided is None:
            decided = store.load_versioned(quiet=True, baseline_run=decision.baseline_run)
        _state, recorded = self._commit(store, observation, decision, *decided)
        if recorded is not decision:  # another run wrote meanwhile: say so
            print(recorded.reason)
            if getattr(self, "decision", None) is decision:
                self.decision = recorded
        # What only the announcing step reads: an unchanged check stores nothing it won't use.
        for name in ("decide_options", "state_version"):
            self.__dict__.pop(name, None)
        return "end"

    def run_pathspec(self):
        """``FlowName/run_id`` of this run, as recorded in the state."""
        return "%s/%s" % (current.flow_name, current.run_id)

    def decide_against(self, state, observation, **decide_kwargs):
        """``decide()`` for this flow and branch, aware of other runs announcing right now.

        A live claim of another run (see ``flowproject.state``) turns a decision to publish
        into ``concurrent``: that run is announcing, this one publishes nothing.

        Parameters
        ----------
        state : SensorState
            From ``StateStore.load_versioned()``.
        observation : Observation
        **decide_kwargs
            Passed to ``decide()`` untouched (``force``, ``settle_checks``, ...); kept as the
            ``decide_options`` artifact so the announcing step re-decides alike.

        Returns
        -------
        Decision
        """
        self.decide_options = dict(decide_kwargs)
        decision = decide(
            observation, state, current.flow_name, self.sensor_branch(), **decide_kwargs
        )
        claim = claim_of_another_run(state, self.run_pathspec())
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

    def redecide(self, decided, observation, state):
        """The decision after another run wrote the state that ``decided`` was made against.

        Only the change this run decided to announce, against the baseline it saw, may still
        be published: if the baseline moved meanwhile, this run's observation may be older
        than the other run's, so it publishes nothing and the next check compares again.

        Parameters
        ----------
        decided : Decision
            The decision made against the older state.
        observation : Observation
        state : SensorState
            The state as it is now.

        Returns
        -------
        Decision
        """
        options = getattr(self, "decide_options", None) or {}
        fresh = self.decide_against(state, observation, **options)
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

    # ------------------------------------------------------------------ announcing

    def event_payload(self, observation, decision):
        """The event payload: ``{payload_key: value}``, ``change_id`` and ``previous_value``."""
        sensor = self.flowconfig.sensor
        payload = {
            sensor.payload_key: observation.payload_value,
            "change_id": decision.change_id,
            "previous_value": "" if decision.previous_value is None else decision.previous_value,
            "state": "absent" if observation.absent else "present",
            "flow": current.flow_name,
            "branch": current.get("branch_name", None) or "",
            "run_id": str(current.run_id),
        }
        # Fields a source adds for consumers, e.g. a table's version to pin (sources.delta).
        for key, value in (observation.summary.get("payload") or {}).items():
            payload.setdefault(key, value)
        return payload

    def announce(self, observation, decision, dry_run=False):
        """Publish the decision's event, record the new state of this branch, show the card.

        The baseline moves only after the event was published. If publishing fails, the
        failed attempt is kept in the history and shown on the card, the error is kept as
        the ``publish_failure`` artifact, and ``fail_if_unpublished()`` (in ``end``) fails
        the run; the next check announces the change again. ``dry_run`` publishes nothing and
        writes nothing. A run that moved the baseline keeps it as artifacts: ``announced``,
        ``announced_value``, ``change_id``. When the step has the ``sensor`` card
        (``@announcement`` adds it) the check is shown on it.

        Parameters
        ----------
        observation : Observation
        decision : Decision
        dry_run : bool

        Returns
        -------
        dict or None
            The published payload, with the event ``name`` and ``id``; None if nothing was
            published.
        """
        sensor = self.flowconfig.sensor
        store = self.state_store()
        # The deciding step already said where the baseline came from; read it quietly here
        # and, without a state object, rebuild it from the one run the decision names.
        state, version = store.load_versioned(quiet=True, baseline_run=decision.baseline_run)
        run_id = self.run_pathspec()
        published, name = None, event_name(sensor)
        decided = decision
        if not dry_run and version != getattr(self, "state_version", version):
            decision = self.redecide(decided, observation, state)
        if decision.publish and not dry_run:
            decision, state, version = self._claim(store, observation, decided, state, version)
        if decision is not decided:
            print(decision.reason)
            if getattr(self, "decision", None) is decided:
                self.decision = decision
        if decision.publish:
            payload = self.event_payload(observation, decision)
            if dry_run:
                print("Dry run: would publish %s with %s" % (name, payload))
            else:
                try:
                    event_id = publish(name, payload, timeout=sensor.publish_timeout)
                except PublishError as e:
                    # Keep the failed attempt in the history; the baseline does not move. The
                    # run fails in ``end``: Metaflow renders no card for a failed step.
                    new_state, decision = self._commit(
                        store, observation, decision, state, version, failed=True
                    )
                    self.announced = False
                    self.publish_failure = str(e)
                    print(str(e), file=sys.stderr)
                    self.show_check(observation, decision, new_state, None, name, dry_run)
                    return None
                published = dict(payload, name=name, id=event_id)
                print("Published %s (change %s)" % (name, decision.change_id))
        if dry_run:
            new_state = advance(
                state, observation, decision, run_id, published is not None, sensor.history_size
            )
            print("Dry run: the sensor state was not changed.")
        else:
            new_state, decision = self._commit(
                store, observation, decision, state, version, published=published is not None
            )
        # The baseline also stays an artifact of the run that set it, so that a lost state
        # object can be rebuilt from past runs (state.recover_from_runs).
        self.announced = decision.moves_baseline and not dry_run
        if self.announced:
            self.announced_value = observation.value
            self.announced_identity = decision.identity  # what a recovered baseline is of
            self.change_id = decision.change_id
        self.show_check(observation, decision, new_state, published, name, dry_run)
        return published

    def fail_if_unpublished(self):
        """Raise ``PublishError`` if this run's announcing step could not publish its event.

        Called in ``end``, so the announcing step keeps its card and the run still fails.
        """
        failure = getattr(self, "publish_failure", None)
        if failure:
            raise PublishError(failure)

    def _claim(self, store, observation, decided, state, version):
        """Claim the change (a CAS write with a lease) before publishing it.

        Returns ``(decision, state, version)``: the decision is re-made after each lost
        compare-and-swap, and may no longer be to publish.
        """
        lease = claim_lease_seconds(self.flowconfig.sensor)
        decision = decided
        for _attempt in range(STATE_WRITE_ATTEMPTS):
            claim = new_claim(self.run_pathspec(), decision.change_id, observation.value, lease)
            try:
                return decision, state, store.save(state, version, claim)
            except StateConflict:
                state, version = store.load_versioned(quiet=True, baseline_run=decided.baseline_run)
                decision = self.redecide(decided, observation, state)
                if not decision.publish:
                    return decision, state, version
        raise StateConflict(
            "Could not claim change %s: the sensor state of branch %s kept changing (%d "
            "attempts); nothing was published"
            % (decision.change_id, store.branch, STATE_WRITE_ATTEMPTS)
        )

    def _commit(self, store, observation, decision, state, version, published=False, failed=False):
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
        sensor = self.flowconfig.sensor
        run_id = self.run_pathspec()
        recorded = {"decision": decision}

        def change(current):
            if current is not state and not published and not failed:
                recorded["decision"] = self.redecide(decision, observation, current)
            other = claim_of_another_run(current, run_id)
            new_state = advance(
                current,
                observation,
                recorded["decision"],
                run_id,
                published,
                sensor.history_size,
                failed=failed,
            )
            return new_state, other

        attempts = STATE_WRITE_ATTEMPTS * (3 if published else 1)
        try:
            new_state, _version = store.update(
                change, state, version, attempts=attempts, baseline_run=decision.baseline_run
            )
        except StateError as e:
            if published:
                raise StateError(
                    "Published change %s, but could not record it in the sensor state (%s); "
                    "the next check will publish it again with the same change id"
                    % (decision.change_id, e)
                ) from None
            print("Sensor state: this check's history entry was dropped: %s" % e, file=sys.stderr)
            new_state, _ = change(state)
        return new_state, recorded["decision"]

    def show_check(self, observation, decision, state, published, name, dry_run):
        """Draw the check on the step's ``sensor`` card, if the step has one."""
        if CARD_ID not in self._card_ids():
            return
        from .cards import render_sensor_card, watched  # metaflow.cards: only steps with a card

        render_sensor_card(
            current.card[CARD_ID],
            observation=observation,
            decision=decision,
            state=state,
            published=published,
            event_name=name,
            dry_run=dry_run,
            changes=getattr(self, "changes", None),
            settle_checks=self.flowconfig.sensor.settle_checks,
            branch=self.sensor_branch(),
            watching=watched(config_data(self)),
            publish_failure=getattr(self, "publish_failure", None),
        )

    def _card_ids(self):
        """Ids of the ``@card`` decorators of the running step."""
        step_func = getattr(self, current.step_name, None)
        return {
            d.attributes.get("id")
            for d in getattr(step_func, "decorators", ())
            if getattr(d, "name", None) == "card"
        }
