"""``flowproject reset``: the next check of a branch becomes a first check."""

import sys

import click

from . import main
from .state_options import fail, load_config, resolve_target, target_options


@main.command()
@target_options
@click.option(
    "--to-current",
    is_flag=True,
    help="Check the source now and make its value the baseline, without an event "
    "(e.g. after a backfill the consumers already processed).",
)
@click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation.")
def reset(flow, project, branch, production, config, to_current, yes):
    """Make the next check of a branch a first check (it publishes what it sees, or accepts it
    with on_first_check = "accept"); with --to-current, accept the source's current value now.

    Leaves a reset marker, so the baseline is not recovered from earlier runs. Written by
    compare-and-swap: refused while a run is announcing a change. Exit codes: 0 reset,
    1 not confirmed (nothing changed), 2 error.
    """
    from ..exceptions import FlowprojectException
    from ..operations import reset_branch

    try:
        loaded = load_config(config, required=to_current)
        store, loaded = resolve_target(flow, project, branch, production, loaded)
        where = "%s branch %s of project %s" % (store.flow_name, store.branch, store.project)
        what = (
            "check the source now and make its value the baseline of %s, without an event"
            if to_current
            else "reset %s: its next check will be a first check"
        ) % where
        if not yes and not click.confirm("This will %s. Continue?" % what, default=False):
            click.echo("Nothing changed.")
            sys.exit(1)
        state = reset_branch(store, config=loaded, to_current=to_current)
    except FlowprojectException as e:
        fail(e)
    if to_current:
        value = state.baseline.value
        click.echo(
            "Reset %s to the current value %s (no event published)."
            % (where, "absent" if value is None else value)
        )
    else:
        click.echo("Reset %s: the next check is a first check." % where)
