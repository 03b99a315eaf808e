"""``flowproject dev``: the local reactive loop (see ``flowproject.devloop``)."""

import sys

import click

from . import main


@main.command()
@click.option(
    "--every",
    type=click.FloatRange(min=0),
    default=None,
    metavar="SECONDS",
    help="Check every SECONDS instead of on the sensor's cron_schedule.",
)
@click.option(
    "--checks",
    type=click.IntRange(min=1),
    default=None,
    metavar="N",
    help="Stop after N checks, once the runs they triggered have finished.",
)
@click.option(
    "--config",
    "config",
    type=click.Path(exists=True, dir_okay=False),
    default=None,
    help="flowconfig.toml passed to the flows that use it (default: the root's).",
)
@click.option("--branch", default=None, help="The @project branch of every run, as for a run.")
@click.option("--production", is_flag=True, help="Run in the @project production branch.")
@click.option(
    "--root",
    type=click.Path(exists=True, file_okay=False),
    default=".",
    show_default=True,
    help="Repository root holding sensorflow.py and the triggered *flow.py files.",
)
@click.option(
    "--sensor-flow",
    default="sensorflow.py",
    show_default=True,
    help="File name of the sensor flow at the root.",
)
@click.option(
    "--logs",
    type=click.Path(file_okay=False),
    default=None,
    help="Folder for the runs' logs (default: a new temporary folder, printed).",
)
@click.option(
    "--drop-undelivered",
    is_flag=True,
    help="Drop the events an earlier flowproject dev received but never delivered (it was "
    "stopped first), instead of delivering them before the first check.",
)
def dev(every, checks, config, branch, production, root, sensor_flow, logs, drop_undelivered):
    """Run the sensor and start the flows its events trigger, as Argo Events would.

    A loopback webhook receives the sensor's events (METAFLOW_ARGO_EVENTS_WEBHOOK_URL is set
    for the sensor runs); each event starts every flow at the root whose @trigger listens for
    it in the same @project branch, with the payload mapped to its Parameters as the Argo
    Events Sensor Metaflow compiles would map them; a flow with several events starts once
    each has arrived since its last start (kept in .metaflow/flowproject-dev/ across
    invocations). The first check runs at once, then on the schedule. Runs are tagged
    flowproject-dev. Ctrl-C stops everything started.

    Each event received is recorded in .metaflow/flowproject-dev/ before anything starts and
    marked delivered once its flows have started: events an earlier flowproject dev received
    but never delivered (stopped by Ctrl-C while the sensor run was finishing) are named and
    delivered before the first check, or dropped with --drop-undelivered.

    Exit code with --checks: 0 if every check and triggered run succeeded, 1 otherwise;
    130 when stopped by Ctrl-C, 2 when it cannot start (an invalid config, a flow whose
    triggers cannot be read).
    """
    from ..devloop import DevLoop
    from ..exceptions import FlowprojectException

    if branch and production:
        raise click.UsageError("--branch and --production exclude each other")
    loop = DevLoop(
        root=root,
        config=config,
        branch=branch,
        production=production,
        every=every,
        checks=checks,
        sensor_flow=sensor_flow,
        log_dir=logs,
        drop_undelivered=drop_undelivered,
    )
    try:
        code = loop.run()
    except FlowprojectException as e:
        click.echo("%s: %s" % (e.headline, e.message), err=True)
        code = 2
    sys.exit(code)
