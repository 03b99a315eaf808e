"""What the demo's S3 and Snowflake parts share: running the flow and telling what happened."""

import os
import re
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

_RUN_ID = re.compile(r"Workflow starting \(run-id (\S+)\)")


def log(message=""):
    print(message, flush=True)


def dev_loop(workdir, env, part, config_text, root=REPO):
    """A ``flowproject dev`` loop for one part of the demo: its config written to
    ``flowconfig-<part>.toml``, its logs in ``dev-logs-<part>``, runs in ``workdir``."""
    from flowproject.devloop import DevLoop

    config_path = os.path.join(workdir, "flowconfig-%s.toml" % part)
    with open(config_path, "w") as f:
        f.write(config_text)
    return DevLoop(
        root=root,
        config=config_path,
        env=env,
        cwd=workdir,
        log_dir=os.path.join(workdir, "dev-logs-%s" % part),
    )


def read_artifact(workdir, pathspec, step, name):
    """An artifact of a run in ``workdir``'s local datastore, read with the Metaflow client."""
    cwd = os.getcwd()
    os.chdir(workdir)  # the client finds the run's .metaflow from the current folder
    try:
        from metaflow import Run, namespace

        namespace(None)
        return Run(pathspec)[step].task[name].data
    finally:
        os.chdir(cwd)


class DemoRunner(object):
    """Runs ``python sensorflow.py --config flowconfig <config> run`` and reports the outcome."""

    def __init__(self, workdir, env, webhook):
        self.workdir, self.env, self.webhook = workdir, env, webhook
        self.log_path = os.path.join(workdir, "flow-runs.log")

    def run(self, title, config_path, *args):
        """Run the sensor once; print its decision and the events the webhook got from it."""
        seen = len(self.webhook.events)
        argv = [
            sys.executable,
            os.path.join(REPO, "sensorflow.py"),
            "--config",
            "flowconfig",
            config_path,
            "run",
        ]
        argv += list(args)
        proc = subprocess.run(argv, cwd=self.workdir, env=self.env, capture_output=True, text=True)
        with open(self.log_path, "a") as f:
            f.write("\n$ %s\n%s\n%s\n" % (" ".join(argv), proc.stdout, proc.stderr))
        log("  %s" % title)
        if proc.returncode != 0:
            log("    run FAILED (exit %d); last lines of its output:" % proc.returncode)
            for line in (proc.stdout + proc.stderr).strip().splitlines()[-15:]:
                log("      " + line)
            raise SystemExit("The demo stopped: a sensor run failed (full log: %s)" % self.log_path)
        decision = self.decision(proc.stdout + proc.stderr)
        if decision is not None:
            log("    decision: %s (%s)" % (decision.action, decision.reason))
        new_events = self.webhook.events[seen:]
        if not new_events:
            log("    webhook: no event")
        for event in new_events:
            log("    webhook: event %s" % event["name"])
            payload = event["payload"]
            for key in sorted(payload):
                if key in ("name", "id", "timestamp", "utc_date", "generated-by-metaflow"):
                    continue
                log("      %s = %r" % (key, payload[key]))
        return new_events

    def three_checks(self, name, config_text, make_change, change_text):
        """The demo's story: first check, a check with nothing changed, a check after a change.

        Parameters
        ----------
        name : str
            Names the config file (``flowconfig-<name>.toml``).
        config_text : str
            The flowconfig.toml the sensor runs with.
        make_change : callable
            Changes the data between the second and the third check.
        change_text : str
            What ``make_change`` did, for the reader.

        Returns
        -------
        tuple of list
            The events each of the three runs published.
        """
        config_path = os.path.join(self.workdir, "flowconfig-%s.toml" % name)
        with open(config_path, "w") as f:
            f.write(config_text)
        first = self.run("1. first check (no baseline yet)", config_path)
        second = self.run("2. check again, nothing changed", config_path)
        make_change()
        log("  " + change_text)
        third = self.run("3. check after the change", config_path)
        return first, second, third

    def decision(self, output):
        """The run's ``decision`` artifact, read back with the Metaflow client."""
        match = _RUN_ID.search(output)
        if not match:
            return None
        from metaflow import Run, metadata, namespace

        # The runs' .metaflow is the one in the working folder (sensor_env(workdir=...)).
        metadata("local@%s" % self.workdir)
        namespace(None)
        return Run("SensorFlow/%s" % match.group(1))["start"].task["decision"].data
