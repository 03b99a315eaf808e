"""``flowproject status``: each sensor branch's stored state (see ``flowproject.operations``)."""

import json

import click

from . import main
from .state_options import fail, load_config


def _text(value, limit=None):
    if value is None:
        return "-"
    text = value if isinstance(value, str) else json.dumps(value, sort_keys=True)
    if limit and len(text) > limit:
        return text[: limit - 3] + "..."
    return text


def _check_text(entry):
    if not entry:
        return "-"
    what = entry.get("kind") or "?"
    if entry.get("failed"):
        what += ", publish FAILED"
    elif entry.get("published"):
        what += ", published"
    by = entry.get("run") or entry.get("by") or "-"
    return "%s at %s by %s" % (what, entry.get("at"), by)


def render(console, status):
    """One branch's status as a few lines and a compact history table."""
    from rich.table import Table

    title = "%s  project %s  branch %s" % (status["flow"], status["project"], status["branch"])
    console.print("[bold]%s[/bold]" % title, soft_wrap=True)
    lines = [("state", status["location"])]
    if status["error"]:
        lines.append(("error", status["error"]))
    else:
        source = status["source"] or {}
        lines.append(("source", _text(source.get("identity"))))
        baseline = status["baseline"]
        if baseline:
            lines.append(("baseline", _text(baseline["value"]) if baseline["value"] else "absent"))
            lines.append(("change", baseline["change_id"]))
            if baseline["run"]:
                announced = "%s by %s" % (baseline["announced_at"], baseline["run"])
            else:
                announced = (
                    "%s by flowproject reset --to-current (no event)" % (baseline["announced_at"])
                )
            lines.append(("announced", announced))
        else:
            lines.append(("baseline", "none: the next check is a first check"))
        lines.append(("last check", _check_text(status["last_check"])))
        pending = status["pending"]
        if pending:
            lines.append(
                (
                    "settling",
                    "%s seen unchanged %s time(s) since %s"
                    % (_text(pending["value"]), pending["seen"], pending["first_seen_at"]),
                )
            )
        if status["failed_publishes"]:
            lines.append(
                (
                    "failed",
                    "%d publish(es), last at %s"
                    % (len(status["failed_publishes"]), status["failed_publishes"][-1]["at"]),
                )
            )
        if status["claim"]:
            claim = status["claim"]
            lines.append(
                (
                    "announcing",
                    "%s: change %s until %s%s"
                    % (
                        claim["run"],
                        claim["change_id"],
                        claim["expires_at"],
                        "" if claim["live"] else " (expired)",
                    ),
                )
            )
        if status["reset"]:
            reset = status["reset"]
            lines.append(
                (
                    "reset",
                    "at %s by %s%s"
                    % (
                        reset.get("at"),
                        reset.get("by"),
                        ", to the current value" if reset.get("to_current") else "",
                    ),
                )
            )
    for name, value in lines:
        console.print("  %-11s %s" % (name, value), soft_wrap=True, markup=False)
    if status["history"]:
        # Fits 80 columns: values are shortened, a run is shown by its id.
        table = Table(box=None, pad_edge=False, padding=(0, 1), show_edge=False)
        table.add_column("at", no_wrap=True)
        table.add_column("decision", no_wrap=True, min_width=9)
        table.add_column("sent", no_wrap=True)
        table.add_column("value", no_wrap=True)
        table.add_column("run / by", no_wrap=True, overflow="ellipsis")
        for entry in status["history"]:
            sent = "FAILED" if entry.get("failed") else "yes" if entry.get("published") else ""
            run = entry.get("run")
            table.add_row(
                _text(entry.get("at")).replace("T", " ").replace("+00:00", ""),
                _text(entry.get("kind")),
                sent,
                _text(entry.get("value"), 20),
                run.rpartition("/")[2] if run else _text(entry.get("by")),
            )
        console.print(table)
    console.print()


@main.command()
@click.option("--json", "as_json", is_flag=True, help="Print JSON (stable keys) for scripts.")
@click.option(
    "--history",
    type=click.IntRange(min=0),
    default=10,
    show_default=True,
    help="How many of the newest checks to show.",
)
@click.option("--branch", default=None, help="Only this branch (as stored: user.alice, prod).")
@click.option("--flow", default=None, help="Only this sensor flow (class name).")
@click.option("--project", default=None, help="Only this @project (default: the config's, if any).")
@click.option("--all-projects", is_flag=True, help="Every project in the datastore.")
@click.option(
    "--config",
    type=click.Path(dir_okay=False),
    default=None,
    help="flowconfig.toml naming the project (default: ./flowconfig.toml, if present).",
)
def status(as_json, history, branch, flow, project, all_projects, config):
    """Show each sensor branch's state: the watched source, the baseline and who announced it,
    the last check, a settling value, failed publishes and the recent history.

    Reads the datastore of Metaflow's configuration (local .metaflow, or S3 with
    METAFLOW_DEFAULT_DATASTORE=s3). Exit code 0, also when no branch has a state.
    """
    from rich.console import Console

    from ..exceptions import FlowprojectException
    from ..operations import find_states, status_of
    from ..state import datastore_storage

    try:
        if project is None and not all_projects:
            loaded = load_config(config)
            project = loaded["project_name"] if loaded else None
        storage = datastore_storage()
        stores = find_states(storage, flow=flow, project=project, branch=branch)
        statuses = [status_of(store, history=history) for store in stores]
    except FlowprojectException as e:
        fail(e)
    if as_json:
        click.echo(json.dumps({"datastore": storage.datastore_root, "states": statuses}, indent=2))
        return
    console = Console(highlight=False)
    if not statuses:
        console.print(
            "No sensor state in %s%s."
            % (storage.datastore_root, " for project %s" % project if project else ""),
            soft_wrap=True,
            markup=False,
        )
        return
    for one in statuses:
        render(console, one)
