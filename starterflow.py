"""StarterFlow: the downstream example, started by SensorFlow's event.

Deployed next to the sensor, it runs whenever the sensor announces new data in the same
@project branch, with the new value as the Parameter named by flowconfig.toml's
[sensor] payload_key. It reads only what changed, and a change it already processed (the same
event delivered twice) is skipped. Locally it runs like any flow:

    python starterflow.py run --data_version 3f2a9c...
"""

from metaflow import config_expr, current, project, step

from flowproject import BaseFlow, sensor_trigger


@project(name=config_expr("flowconfig.project_name"))
@sensor_trigger  # the announced value as Parameter <payload_key>; each change processed once
class StarterFlow(BaseFlow):
    @step
    def start(self):
        """Pin the data this run trains on; a change processed already goes straight to end."""
        key = self.flowconfig.sensor.payload_key
        self.trained_on_value = getattr(self, key)
        # @sensor_trigger set sensor_duplicate: this change was processed by an earlier run.
        self.route = "skip" if self.sensor_duplicate else "train"
        if not self.trained_on_value:
            print("No %s given: a real flow would use the latest data." % key)
        print(
            "%s %s = %r (project %s, branch %s)"
            % (
                "Skipping" if self.sensor_duplicate else "Training on",
                key,
                self.trained_on_value,
                current.project_name,
                current.branch_name,
            )
        )
        self.next({"train": self.train, "skip": self.end}, condition="route")

    @step
    def train(self):
        """Read only the objects this announcement added or modified, then fit a model.

        sensor_changes() streams them from the sensor's manifest, one at a time, however many
        there are. On a first check (or --force-trigger) everything is new: the manifest lists
        it all up to 10,000 objects, else says "read the whole prefix" (complete is False).
        """
        changes = self.sensor_changes()
        self.objects_read = 0
        for change in changes:
            if change.kind != "removed":
                self.objects_read += 1  # a real flow reads change.url here
        if not changes.complete:
            print("The announcement does not list the objects (%s): read them all" % changes.kind)
        print("Read %d new or modified objects" % self.objects_read)
        # Keep the version as an artifact: every model can say which data it saw.
        self.model = {"trained_on": self.trained_on_value, "objects": self.objects_read}
        self.next(self.end)

    @step
    def end(self):
        if self.sensor_duplicate:
            print("Nothing trained: change %s was processed already" % self.sensor_change_id)
        else:
            print("Model trained on %r" % self.model["trained_on"])


if __name__ == "__main__":
    StarterFlow()
