"""SensorFlow: publish an Argo Event when the data named in flowconfig.toml changes.

python sensorflow.py run                      # check once
python sensorflow.py run --dry-run True       # check and report, publish nothing
python sensorflow.py run --force-trigger True # publish even without a change
"""

from metaflow import Parameter, config_expr, project, schedule, step

from flowproject import BaseFlow, announcement, source


@project(name=config_expr("flowconfig.project_name"))
@schedule(cron=config_expr("flowconfig.sensor.cron_schedule"))
class SensorFlow(BaseFlow):
    force_trigger = Parameter(
        "force-trigger", type=bool, default=False, help="Publish the event even if nothing changed."
    )
    dry_run = Parameter(
        "dry-run", type=bool, default=False, help="Check and report; publish nothing, move nothing."
    )

    @source  # the S3 client or Snowflake connection of flowconfig.toml's [data]
    @step
    def start(self):
        """Look at the source and decide whether it changed since the last announcement."""
        self.observation = self.query()
        self.decision = self.decide_change(
            self.observation, force=self.force_trigger, dry_run=self.dry_run
        )
        print(self.decision.reason)
        # Nothing to announce (unchanged, reverted): recorded in the history, straight to end.
        self.route = self.route_check(self.observation, self.decision, dry_run=self.dry_run)
        self.next({"announce": self.announce_change, "end": self.end}, condition="route")

    @announcement  # the run's card, and what publishing needs under --environment=pypi
    @step
    def announce_change(self):
        """Publish the change as an Argo Event, make it the new baseline, show it on the card."""
        self.event = self.announce(self.observation, self.decision, dry_run=self.dry_run)
        self.next(self.end)

    @step
    def end(self):
        """Fail the run if the event could not be published (the next check announces again)."""
        self.fail_if_unpublished()


if __name__ == "__main__":
    SensorFlow()
