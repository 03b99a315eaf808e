"""The sensor's card: what a check saw, what it decided and why, what changed, and the
recent checks of this branch.

Built only from data the run already has (the decision, the diff computed when a change is
announced or settling, and the bounded history kept in the state object), so drawing it
never walks past runs.
"""

from metaflow.cards import Markdown, Table, VegaChart


def _value(value):
    """A value in Markdown."""
    return "*absent*" if value is None else "`%s`" % value


def _cell(value):
    """A value in a table cell (plain text: Markdown is not rendered there)."""
    return "(absent)" if value is None else str(value)


def _md_escape(text):
    return str(text).replace("|", "\\|").replace("*", "\\*").replace("_", "\\_")


def headline(decision, published, dry_run):
    """One line: what the check did."""
    if decision.publish and published:
        return "Published"
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
            "color": {"field": "published", "type": "nominal", "title": "event"},
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


def changes_markdown(changes):
    """Counts and up to DIFF_KEYS_SHOWN keys per category of a listing diff."""
    if changes.get("compared_with") == "nothing":
        intro = "No earlier announced listing to compare with: every object counts as added."
    else:
        intro = "Compared with the listing stored by the last announcement."
    lines = [
        "### Objects changed",
        intro,
        "",
        "**%d added, %d removed, %d modified**"
        % (changes["added"], changes["removed"], changes["modified"]),
    ]
    for kind in ("added", "removed", "modified"):
        keys = changes.get("%s_keys" % kind) or []
        if not keys:
            continue
        more = changes[kind] - len(keys)
        lines.append("")
        lines.append(
            "%s (%s):"
            % (
                kind.capitalize(),
                "first %d of %d" % (len(keys), changes[kind]) if more else len(keys),
            )
        )
        lines.extend("- `%s`" % k for k in keys)
    return "\n".join(lines)


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


def commit_rows(commits):
    """Table rows for ``commits_since``'s commits, newest first."""
    from datetime import datetime, timezone

    rows = []
    for commit in reversed(commits):
        stamp = commit.get("timestamp")
        when = (
            datetime.fromtimestamp(stamp / 1000, timezone.utc).isoformat(timespec="seconds")
            if isinstance(stamp, (int, float))
            else ""
        )
        rows.append(
            [
                str(commit.get("version")),
                str(commit.get("operation") or ""),
                when,
                "yes" if commit.get("data_change") else "no",
                "" if commit.get("rows_added") is None else str(commit["rows_added"]),
            ]
        )
    return rows


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
):
    """Append the check's components to ``card`` (``current.card["sensor"]``).

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
    """
    card.append(Markdown("# Sensor check: %s" % headline(decision, published, dry_run)))
    card.append(
        Markdown(
            "**Decision:** %s (%s). **Why:** %s"
            % (decision.action, decision.kind, _md_escape(decision.reason))
        )
    )
    rows = [
        # Plain table cells: the warning names data (a key), which is never Markdown.
        *([["Warning", str(decision.warning)]] if getattr(decision, "warning", None) else []),
        ["Branch", branch or ""],
        ["Previous value (baseline)", _cell(decision.previous_value)],
        ["Current value", _cell(observation.value)],
        ["Change id", decision.change_id],
        ["Baseline announced by", decision.baseline_run or "nothing yet"],
        [
            "Event",
            (
                event_name
                + (
                    " (id %s)" % published["id"]
                    if published
                    else " (dry run, not published)"
                    if dry_run and decision.publish
                    else " (not published)"
                )
            ),
        ],
    ]
    for key in ("objects", "bytes", "newest", "size", "last_modified"):
        if observation.summary.get(key) is not None:
            rows.append([key, str(observation.summary[key])])
    card.append(Table(rows, headers=["", ""]))
    pending = state.pending
    if pending is not None:
        card.append(
            Markdown(
                "### Pending change\nValue %s first seen %s, seen unchanged %d of %d further "
                "check(s) needed before it is announced (`settle_checks = %d`)."
                % (
                    _value(pending.value),
                    pending.first_seen_at or "",
                    pending.seen,
                    settle_checks,
                    settle_checks,
                )
            )
        )
    if changes:
        card.append(Markdown(changes_markdown(changes)))
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
