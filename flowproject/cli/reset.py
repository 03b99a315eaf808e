"""``flowproject reset``: the next check of a branch (or of some of its sources) becomes a first
check."""

import sys

import click

from . import main
from .state_options import (
    fail,
    load_config,
    resolve_sources,
    resolve_target,
    source_option,
    store_of,
    target_options,
)


@main.command()
@target_options
@source_option(
    "Reset only this source of a multi-source flowconfig.toml (default: every source of the "
    "branch)."
)
@click.option(
    "--to-current",
    is_flag=True,
    help="Check the source now and make its value the baseline, without an event "
    "(e.g. after a backfill the consumers already processed).",
)
@click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation.")
def reset(flow, project, branch, production, config, source, to_current, yes):
    """Make the next check of a branch a first check (it publishes what it sees, or accepts it
    with on_first_check = "accept"); with --to-current, accept the source's current value now.

    In the multi-source form this resets every source of the branch, or the one --source
    names. Leaves a reset marker, so the baseline is not recovered from earlier runs. Written
    by compare-and-swap: refused while a run is announcing a change. Exit codes: 0 reset,
    1 not confirmed (nothing changed), 2 error.
    """
    from ..exceptions import FlowprojectException
    from ..operations import describe_store, reset_branch

    try:
        loaded = load_config(config, required=to_current)
        store, loaded = resolve_target(flow, project, branch, production, loaded)
        stores = [store_of(store, name) for name in resolve_sources(store, loaded, source)]
        where = "%s of project %s" % (
            # One store (the single-source form, or --source) reads as before.
            describe_store(stores[0])
            if len(stores) == 1
            else "sources %s of %s branch %s"
            % (", ".join(s.source for s in stores), store.flow_name, store.branch),
            store.project,
        )
        what = (
            "check the source now and make its value the baseline of %s, without an event"
            if to_current
            else "reset %s: its next check will be a first check"
        ) % where
        if not yes and not click.confirm("This will %s. Continue?" % what, default=False):
            click.echo("Nothing changed.")
            sys.exit(1)
    except FlowprojectException as e:
        fail(e)
    failed = []
    for one in stores:
        where = "%s of project %s" % (describe_store(one), one.project)
        try:
            state = reset_branch(one, config=loaded, to_current=to_current)
        except FlowprojectException as e:
            if len(stores) == 1:
                fail(e)
            # The other sources are still reset; the exit code says one was not.
            click.echo("%s: %s: %s" % (describe_store(one), e.headline, e.message), err=True)
            failed.append(one.source)
            continue
        if to_current:
            value = state.baseline.value
            click.echo(
                "Reset %s to the current value %s (no event published)."
                % (where, "absent" if value is None else value)
            )
        else:
            click.echo("Reset %s: the next check is a first check." % where)
    if len(stores) > 1:
        click.echo(
            "Reset %d of %d sources of %s branch %s%s."
            % (
                len(stores) - len(failed),
                len(stores),
                store.flow_name,
                store.branch,
                "; not reset: %s" % ", ".join(failed) if failed else "",
            )
        )
    if failed:
        sys.exit(2)
