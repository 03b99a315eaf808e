"""``BaseFlow``: what every flow of the project shares.

It loads ``flowconfig.toml`` (validated before any step runs) and offers the sensor's
operations as short methods, so flow files read like the story they tell:

- ``query()``: check the configured source once, returning an ``Observation``;
- ``decide_change(observation)``: compare it with this branch's baseline;
- ``announce(...)``: publish the change as an Argo Event and move the baseline.
"""

import os
import sys

from metaflow import Config, FlowSpec, current

from .config import parse_flowconfig
from .decorators import SourceDecoratorError, active_session
from .events import event_name, publish
from .sensor import SensorState, advance, decide
from .state import StateStore, datastore_storage


class BaseFlow(FlowSpec):
    """A FlowSpec configured by ``flowconfig.toml``.

    Use ``python <flow>.py --config flowconfig PATH run`` to run with another file.
    """

    flowconfig = Config("flowconfig", default="flowconfig.toml", parser=parse_flowconfig)

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

    def state_store(self):
        """The ``StateStore`` of this flow's project branch."""
        return StateStore(
            datastore_storage(self),
            current.flow_name,
            current.get("project_name", None),
            current.get("branch_name", None) or "default",
        )

    def decide_change(self, observation, force=False):
        """Compare ``observation`` with this branch's baseline.

        Parameters
        ----------
        observation : Observation
            From ``query()``.
        force : bool
            Publish even if nothing changed.

        Returns
        -------
        Decision
            Also stored as artifacts by the caller; its ``reason`` says why.
        """
        state = self.state_store().load()
        return decide(
            observation,
            state,
            current.flow_name,
            current.get("branch_name", None) or "default",
            settle_checks=self.flowconfig.sensor.settle_checks,
            force=force,
        )

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
        """Publish the decision's event, then record the new state of this branch.

        The baseline moves only after the event was published: if publishing fails the run
        fails and the next check announces the change again. ``dry_run`` publishes nothing
        and moves nothing.

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
        published = None
        if decision.publish:
            name = event_name(self.flowconfig.sensor)
            payload = self.event_payload(observation, decision)
            if dry_run:
                print("Dry run: would publish %s with %s" % (name, payload))
            else:
                event_id = publish(name, payload)
                published = dict(payload, name=name, id=event_id)
                print("Published %s (change %s)" % (name, decision.change_id))
        if dry_run:
            print("Dry run: the sensor state was not changed.")
            return published
        store = self.state_store()
        state = store.load()
        new_state = advance(
            state,
            observation,
            decision,
            "%s/%s" % (current.flow_name, current.run_id),
            published=published is not None,
            history_size=self.flowconfig.sensor.history_size,
        )
        store.save(new_state)
        return published
