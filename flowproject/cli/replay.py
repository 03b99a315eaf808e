"""``flowproject replay``: re-publish the last announced event of a branch."""

import json

import click

from . import main
from .state_options import fail, load_config, resolve_target, target_options


@main.command()
@target_options
@click.option("--dry-run", is_flag=True, help="Show the event; publish and record nothing.")
def replay(flow, project, branch, production, config, dry_run):
    """Re-publish the branch's last announced event, with its original change_id and
    "replayed": true, to METAFLOW_ARGO_EVENTS_WEBHOOK_URL.

    The event is rebuilt from the announcing run's artifacts; the replay is recorded in the
    branch's history (compare-and-swap), the baseline does not move. Exit codes: 0 published,
    2 nothing to replay or publishing failed.
    """
    from ..exceptions import FlowprojectException
    from ..operations import replay_last

    try:
        store, _ = resolve_target(flow, project, branch, production, load_config(config))
        sent = replay_last(store, dry_run=dry_run)
    except FlowprojectException as e:
        fail(e)
    payload = sent["payload"]
    if dry_run:
        click.echo("Dry run: would publish %s with %s" % (sent["name"], json.dumps(payload)))
        return
    click.echo(
        "Replayed %s (change %s) for %s branch %s: event id %s"
        % (sent["name"], payload["change_id"], store.flow_name, store.branch, sent["id"])
    )
