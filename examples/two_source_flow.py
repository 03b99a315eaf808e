"""TwoSourceFlow: a downstream flow that waits for two sources of a multi-source sensor.

With ``[sources.orders]`` and ``[sources.events]`` tables in flowconfig.toml (see
docs/sources.md, "Waiting for several sources"), SensorFlow announces each source's changes
with that source's own event. This flow starts once both have announced since its last start,
as Argo Events does for the Sensor Metaflow compiles from a multi-event ``@trigger``, and
receives each source's value as the Parameter named by that source's ``payload_key`` (and its
``<source>_change_id`` and ``<source>_changes_url``: a delivery of a pair already processed
does nothing):

    python examples/two_source_flow.py run --orders_version 3f2a9c... --events_version 81c0d4...
    python examples/two_source_flow.py argo-workflows create

It lives under examples/ so that ``./deploy`` and ``flowproject dev``, which take the
repository's top-level flows, do not pick it up; copy it to the root to use it. Run from
examples/, it reads the repository's flowconfig.toml, which then needs those two tables.
"""

from metaflow import config_expr, current, project, step

from flowproject import BaseFlow, sensor_trigger

SOURCES = ["orders", "events"]


@project(name=config_expr("flowconfig.project_name"))
@sensor_trigger(sources=SOURCES)  # one Parameter per source; starts when all have announced
class TwoSourceFlow(BaseFlow):
    @step
    def start(self):
        """Pin each source's announced value: a model should say which data it saw."""
        self.trained_on = {
            name: getattr(self, self.flowconfig.sources[name].payload_key) for name in SOURCES
        }
        if self.sensor_duplicate:  # @sensor_trigger: this pair of changes was processed already
            print("Nothing to do: these changes were processed by an earlier run")
        else:
            for name, value in self.trained_on.items():
                # What changed in this source's announcement, streamed (see starterflow.py).
                changes = self.sensor_changes(source=name)
                print("Training on %s = %r (%d objects changed)" % (name, value, len(changes)))
        print("(project %s, branch %s)" % (current.project_name, current.branch_name))
        self.next(self.end)

    @step
    def end(self):
        pass


if __name__ == "__main__":
    TwoSourceFlow()
