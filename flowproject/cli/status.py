"""``flowproject status``: each sensor branch's stored state (see ``flowproject.operations``)."""

import itertools
import json
import os
import unicodedata

import click

from . import main
from .state_options import fail, load_config


def inert(text):
    """``text`` shown as stored, inert in a terminal: control characters (ANSI escapes,
    newlines, bidirectional overrides) are written as ``\\x1b``-style escapes.

    Parameters
    ----------
    text : str

    Returns
    -------
    str
    """
    shown = []
    for char in text:
        if unicodedata.category(char) in ("Cc", "Cf"):
            code = ord(char)
            shown.append("\\x%02x" % code if code < 0x100 else "\\u%04x" % code)
        else:
            shown.append(char)
    return "".join(shown)


def _text(value, limit=None):
    """A stored value as inert text: a string as is, anything else as JSON; ``-`` for
    None; shortened to ``limit`` characters (the table, never ``--json``)."""
    if value is None:
        return "-"
    text = inert(value if isinstance(value, str) else json.dumps(value, sort_keys=True))
    if limit and len(text) > limit:
        return text[: limit - 3] + "..."
    return text


def _check_text(entry):
    if not entry:
        return "-"
    what = _text(entry.get("kind")) if entry.get("kind") else "?"
    if entry.get("failed"):
        what += ", publish FAILED"
    elif entry.get("published"):
        what += ", published"
    by = entry.get("run") or entry.get("by") or "-"
    return "%s at %s by %s" % (what, _text(entry.get("at")), _text(by))


def _line(indent, name, value):
    """One ``name  value`` line as a rich Text (stored data is never rich markup)."""
    from rich.text import Text

    return Text("%s%-11s %s" % (indent, name, _text(value)))


def _run_cell(entry):
    """The table's ``run / by`` cell: a run by its id, else who (a command)."""
    run = entry.get("run")
    if isinstance(run, str) and run:
        return _text(run.rpartition("/")[2])
    return _text(run if run is not None else entry.get("by"))


def _lines(status, configured=None):
    """``(label, text)`` lines of one source's state (its location and history aside)."""
    source = status["source"] or {}
    lines = []
    if configured is not None and source.get("name") not in configured:
        lines.append(("note", "not a source of flowconfig.toml (state left by an earlier form)"))
    if not status["stored"]:
        carried = status.get("carries_over")
        lines.append(
            (
                "baseline",
                "no state yet: its first check carries over the baseline of %s" % carried
                if carried
                else "no state yet: its next check is a first check",
            )
        )
        return lines
    if status["error"]:
        lines.append(("error", status["error"]))
        return lines
    # Oddly-shaped fields (a hand-edited object): named, then shown as stored.
    lines += [("problem", problem) for problem in status.get("problems") or []]
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
    return lines


def render(console, status, title_suffix="", configured=None):
    """One branch's (or source's) status as a few lines and a compact history table."""
    from rich.table import Table
    from rich.text import Text

    title = "%s  project %s  branch %s%s" % (
        _text(status["flow"]),
        _text(status["project"]),
        _text(status["branch"]),
        _text(title_suffix),
    )
    console.print(Text(title, style="bold"), soft_wrap=True)
    lines = [("state", status["location"])] + _lines(status, configured)
    for name, value in lines:
        console.print(_line("  ", name, value), soft_wrap=True)
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
            # Text cells: a stored string is never read as rich markup.
            table.add_row(
                Text(_text(entry.get("at")).replace("T", " ").replace("+00:00", "")),
                Text(_text(entry.get("kind"))),
                Text(sent),
                Text(_text(entry.get("value"), 20)),
                Text(_run_cell(entry)),
            )
        console.print(table)
    console.print()


def render_sources(console, group, configured=None):
    """A branch's sources, one short block each (``--source NAME`` shows one's history).

    ``group`` is the branch's ``(StateStore, status)`` pairs."""
    from rich.text import Text

    first = group[0][1]
    title = Text(
        "%s  project %s  branch %s"
        % (_text(first["flow"]), _text(first["project"]), _text(first["branch"])),
        style="bold",
    )
    console.print(title + Text("  %d source(s)" % len(group)), soft_wrap=True)
    for store, status in group:
        console.print(Text("  source %s" % _text(store.source)), soft_wrap=True)
        for name, value in [("state", status["location"])] + _lines(status, configured):
            console.print(_line("    ", name, value), soft_wrap=True)
    console.print(
        "  History of one source: flowproject status --source NAME", soft_wrap=True, markup=False
    )
    console.print()


def _with_configured_sources(stores, config, source=None):
    """``stores`` and, for each branch of ``config``'s project that has any state, a store for
    every source of ``config`` without an object yet (shown as "no state yet")."""
    from ..config import DEFAULT_SOURCE, configured_sources
    from ..sources import source_identity
    from ..state import StateStore

    if config is None:
        return stores
    found = {(s.flow_name, s.project, s.branch, s.source) for s in stores}
    branches = sorted(
        {(s.flow_name, s.project, s.branch) for s in stores if s.project == config["project_name"]}
    )
    added = []
    for flow_name, project, branch in branches:
        for watched in configured_sources(config):
            if (flow_name, project, branch, watched.name) in found:
                continue
            if source is not None and watched.name != source:
                continue
            added.append(
                StateStore(
                    stores[0].storage,
                    flow_name,
                    project,
                    branch,
                    source=watched.name,
                    # As a check's store: only a named source carries over [data]'s baseline.
                    identity=None
                    if watched.name == DEFAULT_SOURCE
                    else source_identity(watched.data),
                )
            )
    order = {w.name: i for i, w in enumerate(configured_sources(config))}
    return sorted(
        stores + added,
        key=lambda s: (s.flow_name, s.project or "", s.branch, order.get(s.source, -1), s.source),
    )


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
@click.option(
    "--source",
    default=None,
    metavar="NAME",
    help="Only this source of a multi-source flowconfig.toml, with its history.",
)
@click.option("--flow", default=None, help="Only this sensor flow (class name).")
@click.option("--project", default=None, help="Only this @project (default: the config's, if any).")
@click.option("--all-projects", is_flag=True, help="Every project in the datastore.")
@click.option(
    "--config",
    type=click.Path(dir_okay=False),
    default=None,
    help="flowconfig.toml naming the project (default: ./flowconfig.toml, if present).",
)
def status(as_json, history, branch, source, flow, project, all_projects, config):
    """Show each sensor branch's state: the watched source, the baseline and who announced it,
    the last check, a settling value, failed publishes and the recent history.

    In the multi-source form, one short block per source of each branch (a source without a
    state object yet says so); --source NAME shows one source with its history.

    A state object that cannot be read is reported in its block (error), and each
    oddly-shaped field of a readable one (a hand-edited object) on a "problem" line, shown as
    stored; stored text is shown inert (control characters escaped, never rich markup).

    Reads the datastore of Metaflow's configuration (local .metaflow, or S3 with
    METAFLOW_DEFAULT_DATASTORE=s3) and creates nothing: without a .metaflow folder here or
    above, it says where it looked. Exit code 0, also when no branch has a state or there is
    no datastore, and when a state object is unreadable or oddly shaped (reported as such);
    2 for an error of the options or of flowconfig.toml.
    """
    from rich.console import Console

    from ..config import DEFAULT_SOURCE, configured_sources
    from ..exceptions import FlowprojectException
    from ..operations import NoDatastore, find_states, reading_storage, status_of

    try:
        loaded = None if all_projects else load_config(config)
        if project is None and loaded is not None:
            project = loaded["project_name"]
        if loaded is not None and project != loaded["project_name"]:
            loaded = None  # another project's sources are not this file's
        configured = [w.name for w in configured_sources(loaded)] if loaded else None
        try:
            storage = reading_storage()  # reading creates no .metaflow folder
        except NoDatastore as e:
            if as_json:
                click.echo(
                    json.dumps({"datastore": None, "error": e.message, "states": []}, indent=2)
                )
            else:
                click.echo("No sensor state: %s." % e.message)
            return
        stores = find_states(storage, flow=flow, project=project, branch=branch)
        if source is not None:
            known = configured or sorted({s.source for s in stores})
            if source not in known:
                raise click.BadParameter(
                    "no source named %r; %s: %s"
                    % (
                        source,
                        "flowconfig.toml has" if configured else "the datastore has state of",
                        ", ".join(known) or "none",
                    ),
                    param_hint="'--source'",
                )
        stores = _with_configured_sources(stores, loaded, source)
        if source is not None:
            stores = [s for s in stores if s.source == source]
        statuses = [status_of(store, history=history) for store in stores]
    except FlowprojectException as e:
        fail(e)
    if as_json:
        click.echo(json.dumps({"datastore": storage.datastore_root, "states": statuses}, indent=2))
        return
    console = Console(highlight=False)
    if not statuses:
        missing = storage.TYPE == "local" and not os.path.isdir(storage.datastore_root)
        console.print(
            "No sensor state in %s%s%s."
            % (
                storage.datastore_root,
                " (no such folder)" if missing else "",
                " for project %s" % project if project else "",
            ),
            soft_wrap=True,
            markup=False,
        )
        return
    # The configured sources mark the stored ones flowconfig.toml no longer names.
    marked = configured

    def branch_of(pair):
        return pair[0].flow_name, pair[0].project, pair[0].branch

    for _, group in itertools.groupby(zip(stores, statuses, strict=True), key=branch_of):
        group = list(group)
        named = any(store.source != DEFAULT_SOURCE for store, _ in group)
        if named and source is None:
            render_sources(console, group, marked)
            continue
        for store, one in group:
            render(console, one, "  source %s" % store.source if named else "", marked)
