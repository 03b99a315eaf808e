"""SensorFlow: publish an Argo Event when data named in flowconfig.toml changes.

One source ([data]) or several ([sources.<name>]), each with its own baseline and event.

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

    @source  # the clients or connections of the sources in flowconfig.toml
    @step
    def start(self):
        """Look at each source and decide whether it changed since its last announcement."""
        # Nothing to announce anywhere (unchanged, reverted): recorded, straight to end.
        self.route = self.check_sources(force=self.force_trigger, dry_run=self.dry_run)
        self.next({"announce": self.announce_change, "end": self.end}, condition="route")

    @announcement  # the run's card, and what publishing needs under --environment=pypi
    @step
    def announce_change(self):
        """Publish each change as an Argo Event, move its baseline, show the checks on the card."""
        self.announce_changes(dry_run=self.dry_run)
        self.next(self.end)

    @step
    def end(self):
        """Fail the run if a check or an event failed (the next check announces again)."""
        self.fail_if_unpublished()


if __name__ == "__main__":
    SensorFlow()
