"""``flowproject replay``: re-publish the last announced event of a branch (or of one source)."""

import json
import shlex

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
@source_option("The source whose event to replay (required in the multi-source form).")
@click.option("--dry-run", is_flag=True, help="Show the event; publish and record nothing.")
def replay(flow, project, branch, production, config, source, dry_run):
    """Re-publish the branch's last announced event, with its original change_id and
    "replayed": true, to METAFLOW_ARGO_EVENTS_WEBHOOK_URL.

    The event is rebuilt from the announcing run's artifacts; the replay is recorded in the
    branch's history (compare-and-swap), the baseline does not move. In the multi-source form
    --source names the source (one event: replaying every source would start every
    downstream flow). Exit codes: 0 published, 2 nothing to replay or publishing failed.
    """
    from ..config import DEFAULT_SOURCE
    from ..exceptions import FlowprojectException
    from ..operations import describe_store, reading_storage, replay_last

    try:
        loaded = load_config(config)
        # Finding the event only reads: no .metaflow folder is created where there is none.
        store, loaded = resolve_target(
            flow, project, branch, production, loaded, storage=reading_storage()
        )
        names = resolve_sources(store, loaded, source)
        if source is None and names != [DEFAULT_SOURCE]:
            raise click.UsageError(
                "%s branch %s has the sources %s: pass --source NAME to replay the event of "
                "one (replaying them all would start every downstream flow again)"
                % (store.flow_name, store.branch, ", ".join(names))
            )
        store = store_of(store, names[0])
        advised = ["flowproject", "replay", "--dry-run"]
        for option, value in (
            ("--flow", flow if flow != "SensorFlow" else None),
            ("--project", project),
            ("--branch", branch),
            ("--config", config),
            ("--source", source),
        ):
            advised += [option, value] if value else []
        advised += ["--production"] if production else []
        sent = replay_last(store, dry_run=dry_run, dry_run_command=shlex.join(advised))
    except FlowprojectException as e:
        fail(e)
    payload = sent["payload"]
    if dry_run:
        click.echo("Dry run: would publish %s with %s" % (sent["name"], json.dumps(payload)))
        return
    click.echo(
        "Replayed %s (change %s) for %s: event id %s"
        % (sent["name"], payload["change_id"], describe_store(store), sent["id"])
    )
