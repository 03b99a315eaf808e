"""``BaseFlow``: what every flow of the project shares.

It loads ``flowconfig.toml`` (validated before any step runs) and offers the sensor's
operations as short methods, so flow files read like the story they tell:

- ``query()``: check the configured source once, returning an ``Observation``;
- ``decide_change(observation)``: compare it with this branch's baseline;
- ``announce(...)``: publish the change as an Argo Event, move the baseline, and show the
  check on the step's ``sensor`` card.
"""

import dataclasses
import inspect
import os
import sys

from metaflow import Config, FlowSpec, current

from .cards import render_sensor_card, watched
from .config import parse_flowconfig
from .decorators import CARD_ID, SourceDecoratorError, active_session, config_data
from .events import event_name, publish
from .exceptions import PublishError
from .sensor import (
    advance,
    decide,
    decision_options,
    diff_listings,
    pack_listing,
    read_listing_file,
    unpack_listing,
)
from .state import StateStore, datastore_storage, load_listing


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
        return module.check(data, session)

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
        state = self.state_store().load()
        decision = decide(
            observation,
            state,
            current.flow_name,
            self.sensor_branch(),
            force=force,
            **decision_options(self.flowconfig.sensor),
        )
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
        return payload

    def announce(self, observation, decision, dry_run=False):
        """Publish the decision's event, record the new state of this branch, show the card.

        The baseline moves only after the event was published: if publishing fails the run
        fails (the failed attempt is kept in the history) and the next check announces the
        change again. ``dry_run`` publishes nothing and writes nothing. A run that moved
        the baseline keeps it as artifacts: ``announced``, ``announced_value``, ``change_id``.
        When the step has
        the ``sensor`` card (``@announcement`` adds it) the check is shown on it.

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
        state = store.load(quiet=True, baseline_run=decision.baseline_run)
        run_id = "%s/%s" % (current.flow_name, current.run_id)
        published, name = None, event_name(sensor)
        if decision.publish:
            payload = self.event_payload(observation, decision)
            if dry_run:
                print("Dry run: would publish %s with %s" % (name, payload))
            else:
                try:
                    event_id = publish(name, payload)
                except PublishError:
                    # Keep the failed attempt in the history; the baseline does not move.
                    store.save(
                        advance(
                            state,
                            observation,
                            decision,
                            run_id,
                            False,
                            sensor.history_size,
                            failed=True,
                        )
                    )
                    raise
                published = dict(payload, name=name, id=event_id)
                print("Published %s (change %s)" % (name, decision.change_id))
        new_state = advance(
            state, observation, decision, run_id, published is not None, sensor.history_size
        )
        if dry_run:
            print("Dry run: the sensor state was not changed.")
        else:
            store.save(new_state)
        # The baseline also stays an artifact of the run that set it, so that a lost state
        # object can be rebuilt from past runs (state.recover_from_runs).
        self.announced = decision.moves_baseline and not dry_run
        if self.announced:
            self.announced_value = observation.value
            self.change_id = decision.change_id
        self.show_check(observation, decision, new_state, published, name, dry_run)
        return published

    def show_check(self, observation, decision, state, published, name, dry_run):
        """Draw the check on the step's ``sensor`` card, if the step has one."""
        if CARD_ID not in self._card_ids():
            return
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
        )

    def _card_ids(self):
        """Ids of the ``@card`` decorators of the running step."""
        step_func = getattr(self, current.step_name, None)
        return {
            d.attributes.get("id")
            for d in getattr(step_func, "decorators", ())
            if getattr(d, "name", None) == "card"
        }
