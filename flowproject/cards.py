"""The sensor's card: what a check saw, what it decided and why, what changed, and the
recent checks of this branch.

Built only from data the run already has (the decision, the diff computed when a change is
announced or settling, and the bounded history kept in the state object), so drawing it
never walks past runs.
"""

from metaflow.cards import Markdown, Table, VegaChart

# One colour per outcome, the same on every card: the headline's marker and the chart's points
# (Vega would otherwise colour by order of appearance, different from card to card).
OUTCOME_COLORS = {
    "published": "#2e7d32",
    "would publish": "#6a1b9a",
    "failed": "#c62828",
    "settling": "#ef8f00",
    "accepted": "#1565c0",
    "no event": "#757575",
}


def _cell(value):
    """A value in a table cell: shown as text, whatever it holds (never parsed as Markdown
    or HTML, unlike a ``Markdown`` component, so keys and query results cannot inject)."""
    return "(absent)" if value is None else str(value)


def outcome(decision, published, dry_run):
    """The check's outcome, a key of ``OUTCOME_COLORS``."""
    if decision.publish and published:
        return "published"
    if decision.publish and dry_run:
        return "would publish"
    if decision.kind == "settling":
        return "settling"
    if decision.action == "accept":
        return "accepted"
    return "no event"


def history_outcome(entry):
    """The outcome of one entry of the state's history, a key of ``OUTCOME_COLORS``."""
    if entry.get("failed"):
        return "failed"
    if entry.get("published"):
        return "published"
    if entry.get("kind") == "settling":
        return "settling"
    if entry.get("kind") == "accepted":
        return "accepted"
    return "no event"


def headline(decision, published, dry_run, publish_failure=None):
    """One line: what the check did."""
    if decision.publish and published:
        return "Published"
    if decision.publish and publish_failure:
        return "Publish failed (the run fails; the next check announces again)"
    if decision.publish and dry_run:
        return "Would publish (dry run)"
    if decision.kind == "settling":
        return "Settling, not announced yet"
    if decision.kind == "absent":
        return "Source absent, recorded as the baseline (no event)" + (
            " (dry run)" if dry_run else ""
        )
    if decision.action == "accept":
        return "Accepted as the baseline (no event)" + (" (dry run)" if dry_run else "")
    return "Nothing to announce"


def history_chart(history):
    """A Vega-Lite spec of the recent checks: object count (when known) over time."""
    values = [
        {
            "at": h.get("at"),
            "objects": h.get("objects"),
            "kind": h.get("kind"),
            "outcome": history_outcome(h),
            "published": "published"
            if h.get("published")
            else ("failed" if h.get("failed") else "not published"),
            "value": h.get("value"),
            "run": h.get("run"),
        }
        for h in history
    ]
    has_counts = any(v["objects"] is not None for v in values)
    y = (
        {
            "field": "objects",
            "type": "quantitative",
            "title": "objects",
            "axis": {"format": "d", "tickMinStep": 1},
        }
        if has_counts
        else {"field": "kind", "type": "nominal", "title": "decision"}
    )
    x = {
        "field": "at",
        "type": "temporal",
        "title": "check (UTC)",
        "axis": {"format": "%d %b %H:%M:%S", "labelAngle": -30},
    }
    tooltip = [
        {"field": "at", "type": "temporal", "timeUnit": "yearmonthdatehoursminutesseconds"},
        {"field": "kind"},
        {"field": "published", "title": "event"},
        {"field": "value"},
        {"field": "run"},
    ] + ([{"field": "objects"}] if has_counts else [])
    points = {
        "mark": {"type": "point", "filled": True, "size": 70},
        "encoding": {
            "x": x,
            "y": y,
            "color": {
                "field": "outcome",
                "type": "nominal",
                "title": "outcome",
                "scale": {
                    "domain": list(OUTCOME_COLORS),
                    "range": list(OUTCOME_COLORS.values()),
                },
            },
            "tooltip": tooltip,
        },
    }
    layers = [points]
    if has_counts:
        layers.insert(0, {"mark": {"type": "line", "color": "#999"}, "encoding": {"x": x, "y": y}})
    return {
        "$schema": "https://vega.github.io/schema/vega-lite/v5.json",
        "title": "Last %d checks of this branch" % len(values),
        "data": {"values": values},
        "layer": layers,
        "height": 180,
    }


def changes_components(changes):
    """Counts and up to DIFF_KEYS_SHOWN keys per category of a listing diff.

    The headings are ours (Markdown); the keys, named by whoever wrote the objects, are table
    cells (text).
    """
    if changes.get("compared_with") == "nothing":
        intro = "No earlier announced listing to compare with: every object counts as added."
    else:
        intro = "Compared with the listing stored by the last announcement."
    components = [
        Markdown(
            "### Objects changed\n%s\n\n**%d added, %d removed, %d modified**"
            % (intro, int(changes["added"]), int(changes["removed"]), int(changes["modified"]))
        )
    ]
    for kind in ("added", "removed", "modified"):
        keys = changes.get("%s_keys" % kind) or []
        if not keys:
            continue
        total = int(changes[kind])
        shown = "first %d of %d" % (len(keys), total) if total > len(keys) else "%d" % len(keys)
        components.append(
            Table([[_cell(k)] for k in keys], headers=["%s (%s)" % (kind.capitalize(), shown)])
        )
    return components


def watched(data):
    """What a sensor watches, for the card: bucket, key and mode, or the SQL template and the
    connection path (never a secret).

    Parameters
    ----------
    data : dict
        The validated ``[data]`` table of ``flowconfig.toml``.
    """
    from .sources import describe_source

    return describe_source(data)


COMMIT_COLUMNS = ("version", "operation", "time (UTC)", "changed data", "rows added")


def commits_since(commits, previous_value):
    """The commits of a table source (``summary["commits"]``, oldest first) after the
    announced one.

    ``previous_value`` is ``"<version>@<table id>"`` (``sources.delta``) or a snapshot id
    (``sources.iceberg``); when it is not among the commits (another table, none announced
    yet, older than the commits kept) every commit is shown.
    """
    if not commits:
        return []
    version = (previous_value or "").partition("@")[0]
    for index, commit in enumerate(commits):
        if str(commit.get("version")) == version:
            return list(commits[index + 1 :])
    return list(commits)


def commit_time(stamp):
    """A commit's time (milliseconds since the epoch) as ISO 8601 UTC: ``""`` when the log does
    not say, ``"unknown"`` when it is no plausible time (a writer that stored microseconds gives
    a year past 9999, which ``datetime`` cannot show)."""
    from datetime import datetime, timezone

    if stamp is None:
        return ""
    if not isinstance(stamp, (int, float)) or isinstance(stamp, bool):
        return "unknown"
    try:
        return datetime.fromtimestamp(stamp / 1000, timezone.utc).isoformat(timespec="seconds")
    except (ValueError, OverflowError, OSError):
        return "unknown"


def commit_rows(commits):
    """Table rows for ``commits_since``'s commits, newest first."""
    rows = []
    for commit in reversed(commits):
        rows.append(
            [
                str(commit.get("version")),
                str(commit.get("operation") or ""),
                commit_time(commit.get("timestamp")),
                "yes" if commit.get("data_change") else "no",
                "" if commit.get("rows_added") is None else str(commit["rows_added"]),
            ]
        )
    return rows


def render_sources_summary(card, rows, dry_run, branch=None):
    """Append the table of a multi-source check to ``card``: one row per source.

    Parameters
    ----------
    card : CardComponentCollector entry
    rows : list of dict
        ``source``, ``decision`` (None when the check failed), ``published`` (payload or
        None), ``event_name`` (None when the source was not announced), ``failure`` (why the
        check or the event failed, or None).
    dry_run : bool
    branch : str, optional
    """
    failed = sum(1 for row in rows if row["failure"])
    announced = sum(1 for row in rows if row["published"])
    card.append(
        Markdown(
            "# Sensor check: %d source%s, %d announced, %d failed%s"
            % (
                len(rows),
                "" if len(rows) == 1 else "s",
                announced,
                failed,
                " (dry run)" if dry_run else "",
            )
        )
    )
    table = []
    for row in rows:
        decision = row["decision"]
        if row["failure"]:
            result = "failed"
        elif decision is None:
            result = "no event"
        else:
            result = outcome(decision, row["published"], dry_run)
        if row["published"]:
            event = "%s (id %s)" % (row["event_name"], row["published"]["id"])
        else:
            event = ""
        why = row["failure"] or (decision.reason if decision is not None else "")
        table.append([_cell(row["source"]), _cell(result), _cell(event), _cell(why)])
    card.append(Table(table, headers=["Source", "Outcome", "Event", "Why"]))
    if branch:
        card.append(Table([["Branch", _cell(branch)]], headers=["", ""]))


def render_sensor_card(
    card,
    observation,
    decision,
    state,
    published,
    event_name,
    dry_run,
    changes=None,
    settle_checks=0,
    branch=None,
    watching=None,
    publish_failure=None,
    source=None,
):
    """Append the check's components to ``card`` (``current.card["sensor"]``).

    Everything that comes from the data or the config (values, keys, reasons) goes in table
    cells, which show text; ``Markdown`` only ever holds text written here.

    Parameters
    ----------
    card : CardComponentCollector entry
    observation : Observation
    decision : Decision
    state : SensorState
        The state after this check (for a dry run: what it would be).
    published : dict or None
        The published payload, or None.
    event_name : str
    dry_run : bool
    changes : dict, optional
        From ``diff_listings`` (``files_metadata``, when a change is announced or settling).
    settle_checks : int
    branch : str
    watching : str, optional
        What the sensor watches, from ``watched(data)``.
    publish_failure : str, optional
        Why publishing failed (the baseline did not move).
    source : str, optional
        The source's name, for a sensor with several (a validated name: letters, digits, '_').
    """
    result = "failed" if publish_failure else outcome(decision, published, dry_run)
    card.append(
        Markdown(
            # One HTML block, our own text only: the card's Markdown renderer drops the text
            # of inline HTML in a '#' heading (the marker then showed no colour).
            '<h%d><span style="color: %s">\u25cf</span> %s: %s</h%d>'
            % (
                2 if source else 1,
                OUTCOME_COLORS[result],
                "Source %s" % source if source else "Sensor check",
                headline(decision, published, dry_run, publish_failure),
                2 if source else 1,
            )
        )
    )
    if published:
        event = "%s (id %s)" % (event_name, published["id"])
    elif dry_run and decision.publish:
        event = "%s (dry run, not published)" % event_name
    elif publish_failure:
        event = "%s (not published: %s)" % (event_name, publish_failure)
    else:
        event = "%s (not published)" % event_name
    rows = [
        ["Watched", _cell(watching or "")],
        ["Branch", _cell(branch or "")],
        ["Decision", "%s (%s)" % (_cell(decision.action), _cell(decision.kind))],
        ["Why", _cell(decision.reason)],
    ]
    warning = getattr(decision, "warning", None)
    if warning:
        rows.append(["Warning", _cell(warning)])
    rows += [
        ["Previous value (baseline)", _cell(decision.previous_value)],
        ["Current value", _cell(observation.value)],
        ["Change id", _cell(decision.change_id)],
        ["Baseline announced by", _cell(decision.baseline_run or "nothing yet")],
        ["Event", _cell(event)],
    ]
    for key in ("objects", "bytes", "newest", "size", "last_modified"):
        if observation.summary.get(key) is not None:
            rows.append([key, _cell(observation.summary[key])])
    card.append(Table(rows, headers=["", ""]))
    pending = state.pending
    if pending is not None:
        card.append(Markdown("### Pending change"))
        card.append(
            Table(
                [
                    ["Value", _cell(pending.value)],
                    ["First seen", _cell(pending.first_seen_at or "")],
                    [
                        "Seen unchanged",
                        "%d of %d further check(s) needed before it is announced "
                        "(settle_checks = %d)"
                        % (int(pending.seen), int(settle_checks), int(settle_checks)),
                    ],
                ],
                headers=["", ""],
            )
        )
    if changes:
        for component in changes_components(changes):
            card.append(component)
    commits = commits_since(observation.summary.get("commits"), decision.previous_value)
    if commits:
        card.append(Markdown("### Commits since the last announcement"))
        card.append(Table(commit_rows(commits), headers=list(COMMIT_COLUMNS)))
    if state.history:
        card.append(VegaChart(history_chart(state.history)))
    if dry_run:
        card.append(
            Markdown("*Dry run: nothing was published and the sensor state was not changed.*")
        )


def render_card_problem(card, what, error):
    """Append a line saying the card could not show ``what`` (drawing it raised ``error``).

    The check itself is unaffected: the card is drawn after the events were published and
    the baselines moved, so a part that cannot be drawn must never fail the step.
    """
    card.append(
        Table(
            [["Card", _cell("could not show %s: %s" % (what, error.__class__.__name__))]],
            headers=["", ""],
        )
    )
