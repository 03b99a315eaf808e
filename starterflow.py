"""StarterFlow: the downstream example, started by SensorFlow's event.

Deployed next to the sensor, it runs whenever the sensor announces new data in the same
@project branch, with the new value as the Parameter named by flowconfig.toml's
[sensor] payload_key. Locally it runs like any flow:

    python starterflow.py run --data_version 3f2a9c...
"""

from metaflow import card, config_expr, current, project, step

from flowproject import BaseFlow, sensor_trigger


@project(name=config_expr("flowconfig.project_name"))
@sensor_trigger  # adds Parameter <payload_key> and @trigger on the sensor's event
class StarterFlow(BaseFlow):
    @step
    def start(self):
        """Pin the data this run trains on to the version the sensor announced."""
        key = self.flowconfig.sensor.payload_key
        self.trained_on_value = getattr(self, key)
        if not self.trained_on_value:
            print("No %s given: a real flow would use the latest data." % key)
        print(
            "Training on %s = %r (project %s, branch %s)"
            % (key, self.trained_on_value, current.project_name, current.branch_name)
        )
        self.next(self.train)

    @step
    def train(self):
        """Where a training flow would read the data at self.trained_on_value and fit a model.

        Keep the version as an artifact: every model can then say which data it saw, and a
        rerun with --<payload_key> reproduces it.
        """
        self.model = {"trained_on": self.trained_on_value}
        self.next(self.end)

    @card(type="blank", id="starter")
    @step
    def end(self):
        print("Model trained on %r" % self.model["trained_on"])


if __name__ == "__main__":
    StarterFlow()
