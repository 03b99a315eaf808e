"""``BaseFlow``: what every flow of the project shares.

It loads ``flowconfig.toml`` (validated before any step runs) and wires the sensor's steps to
the checks of its sources, so flow files read like the story they tell:

- ``check_sources()``: check and decide every source of ``flowconfig.toml`` (one ``[data]``
  table is the source named ``default``), each through its ``SourceCheck``
  (``flowproject.source_check``), and say where the run goes;
- ``announce_changes()``: claim, publish and commit what was decided, and draw the card;
- ``fail_if_unpublished()``: fail the run (in ``end``) when a check or an event failed.

One source or many, the path is the same; with one ``[data]`` source the run also keeps the
documented single-source artifacts (``observation``, ``decision``, ``event``,
``announced_value``, ...) as views of that source's entries.
"""

import functools
import inspect
import os
import sys

from metaflow import Config, FlowSpec, current

from .bounded import run_bounded
from .config import configured_sources, parse_flowconfig
from .decorators import CARD_ID
from .exceptions import PublishError, SourceError, SourcesFailed
from .source_check import SourceCheck
from .sources import describe_source, failure_text
from .state import DEFAULT_SOURCE, datastore_storage


def flowconfig_next_to_flow(context):
    """The default ``flowconfig.toml``, found from the flow file, whatever the current folder
    (Metaflow would open a relative default from the current folder).

    The one next to the flow file; else, for a flow in a sub-folder of a repository (such as
    ``examples/``), the one at the repository's root: the first parent folder holding a
    ``.git`` or a ``pyproject.toml``. The search never goes above that root. When neither
    exists, the path next to the flow file is returned, so Metaflow's error names it.

    Parameters
    ----------
    context : ParameterContext
        Given by Metaflow; its ``flow_name`` names the flow class.
    """
    folder = _flow_folder(context.flow_name)
    here = os.path.join(folder, "flowconfig.toml")
    if os.path.isfile(here):
        return here
    root = folder
    while not any(os.path.exists(os.path.join(root, m)) for m in (".git", "pyproject.toml")):
        if os.path.dirname(root) == root:
            return here  # no repository root above the flow: name the path next to it
        root = os.path.dirname(root)
    at_root = os.path.join(root, "flowconfig.toml")
    return at_root if os.path.isfile(at_root) else here


def _flow_folder(flow_name):
    """The folder of the file defining the flow class ``flow_name`` (the script being run)."""
    main = sys.modules.get("__main__")
    candidates = [getattr(main, flow_name, None)] + _subclasses(BaseFlow)
    for cls in candidates:
        if isinstance(cls, type) and cls.__name__ == flow_name:
            try:
                return os.path.dirname(os.path.abspath(inspect.getfile(cls)))
            except (TypeError, OSError):
                break
    main_file = getattr(main, "__file__", None)
    return os.path.dirname(os.path.abspath(main_file)) if main_file else os.getcwd()


def _subclasses(cls):
    found = []
    for sub in cls.__subclasses__():
        found += [sub] + _subclasses(sub)
    return found


class BaseFlow(FlowSpec):
    """A FlowSpec configured by ``flowconfig.toml``: by default the one next to the flow file.

    Use ``python <flow>.py --config flowconfig PATH run`` to run with another file.
    """

    flowconfig = Config(
        "flowconfig",
        default=flowconfig_next_to_flow,
        parser=parse_flowconfig,
        # Metaflow appends "[default: ...]" to the help without a space.
        help="The sensor's settings: by default the flowconfig.toml next to the flow file. ",
    )

    # ------------------------------------------------------------------ the sources' checks

    def sensor_branch(self):
        """The ``@project`` branch whose baselines this run reads and moves (``default``
        without ``@project``)."""
        return current.get("branch_name", None) or "default"

    def run_pathspec(self):
        """``FlowName/run_id`` of this run, as recorded in the state."""
        return "%s/%s" % (current.flow_name, current.run_id)

    def source_checks(self, names=None):
        """A ``SourceCheck`` for each configured source (or those ``names``), by name."""
        storage = datastore_storage(self)
        return {
            w.name: SourceCheck(
                w,
                current.flow_name,
                current.get("project_name", None),
                self.sensor_branch(),
                self.run_pathspec(),
                storage,
            )
            for w in configured_sources(self.flowconfig)
            if names is None or w.name in names
        }

    def check_sources(self, force=False, dry_run=False):
        """Check every source of ``flowconfig.toml`` and decide for each; return the route.

        Every source is checked and decided in its own thread, at most ``[sensor]
        check_concurrency`` at once (also the bound on the threads and connections of all
        listings together), each within ``[sensor] source_timeout`` seconds; one source's
        failure does not stop the others. A check with nothing to announce (unchanged,
        reverted) is recorded in the source's history here. Artifacts, by source name:
        ``observations``, ``decisions``, ``check_failures``, ``listings``, ``checks`` (what
        each check asked its source), ``sensor_records`` (the states written, from which a
        lost state object is rebuilt); with one ``[data]`` source also ``observation``,
        ``decision``, ``checked``, ``listing``, ``changes``.

        Must run in a step decorated with ``@source``.

        Parameters
        ----------
        force : bool
            Publish every source's event even without a change.
        dry_run : bool
            Check and decide; publish and write nothing.

        Returns
        -------
        str
            ``"announce"`` when a source has something to announce or show (or failed),
            else ``"end"``: the condition of the step's ``self.next({...})``.
        """
        sensor = self.flowconfig.sensor
        checks = self.source_checks()
        workers = min(sensor.check_concurrency, len(checks))
        # One bound for the run: each listing gets its share of the threads.
        share = max(1, sensor.check_concurrency // workers)

        def check_one(check):
            data = check.data
            if "list_concurrency" in data:
                data = dict(data, list_concurrency=min(data["list_concurrency"], share))
            return check.check_and_decide(force, dry_run, data, sensor.source_timeout)

        outcomes = run_bounded(
            {name: functools.partial(check_one, check) for name, check in checks.items()},
            workers,
            sensor.source_timeout,
        )
        self.observations, self.decisions, self.check_failures = {}, {}, {}
        self.listings, self.checks, self.sensor_records = {}, {}, {}
        self.state_versions, self.source_options, changes = {}, {}, {}
        for name, (_decision, error) in outcomes.items():
            check = checks[name]
            self.checks[name] = {"source": describe_source(check.data), "requests": check.requests}
            if check.record is not None:
                self.sensor_records[name] = check.record
            if error is not None:
                self.check_failures[name] = check.fail(error, sensor.source_timeout)
                continue
            self.observations[name], self.decisions[name] = check.observation, check.decision
            if check.listing is not None:
                self.listings[name] = check.listing
            if check.changes is not None:
                changes[name] = check.changes
            if not check.is_quiet(check.decision, dry_run):
                self.state_versions[name] = check.state_version
                self.source_options[name] = check.options
        if changes:
            self.source_changes = changes
        self._single_source_views(checks)
        loud = self.state_versions or self.check_failures
        self.route = "announce" if loud else "end"
        return self.route

    def announce_changes(self, dry_run=False):
        """Announce what ``check_sources`` decided, and show every check on the card.

        Each source that has something to announce is claimed, published and committed in
        its own thread (a webhook down for one event does not hold the others back). The
        baseline moves only after the event was published; a failed publish is kept in the
        history and on the card, and ``fail_if_unpublished()`` (in ``end``) fails the run,
        so the next check announces the change again. Artifacts, by source name: ``events``
        (payloads published), ``publish_failures``, ``announcements`` ({value, change_id,
        identity} of each baseline moved), ``sensor_records``; with one ``[data]`` source
        also ``event``, ``announced``, ``announced_value``, ``change_id``,
        ``publish_failure``.

        Parameters
        ----------
        dry_run : bool
            Publish and write nothing; say what would be published.
        """
        sensor = self.flowconfig.sensor
        checks = self.source_checks(self.state_versions)
        for name, check in checks.items():
            check.resume(
                self.observations[name],
                self.decisions[name],
                self.state_versions[name],
                self.source_options[name],
            )

        def announce_one(check):
            return check.announce(current.get("branch_name", None), current.run_id, dry_run)

        outcomes = run_bounded(
            {name: functools.partial(announce_one, check) for name, check in checks.items()},
            min(sensor.check_concurrency, max(1, len(checks))),
            # A publish ends within publish_timeout; the state writes around it are short.
            sensor.publish_timeout + 120,
        )
        self.events, self.publish_failures, self.announcements = {}, {}, {}
        records = dict(self.sensor_records)
        for name, (_decision, error) in outcomes.items():
            check = checks[name]
            if check.record is not None:
                records[name] = check.record
            if error is not None:
                check.failure = "announcing failed: %s" % failure_text(error)
                check.say(check.failure, file=sys.stderr)
            self.decisions[name] = check.decision
            if check.failure:
                self.publish_failures[name] = check.failure
            elif check.published:
                self.events[name] = check.published
            if check.announced is not None and not dry_run:
                self.announcements[name] = check.announced
        self.sensor_records = records
        self._single_source_views(checks, announcing=True)
        self.show_checks(checks, dry_run)

    def _single_source_views(self, checks, announcing=False):
        """With one ``[data]`` source, its entries under the documented single-source names."""
        if set(self.checks) != {DEFAULT_SOURCE}:  # every configured source was checked
            return
        name = DEFAULT_SOURCE
        if not announcing:
            self.checked = self.checks[name]
            if name in self.observations:
                self.observation, self.decision = self.observations[name], self.decisions[name]
            if name in self.listings:
                self.listing = self.listings[name]
            if name in (getattr(self, "source_changes", None) or {}):
                self.changes = self.source_changes[name]
            return
        if name not in checks:
            return
        self.decision = self.decisions[name]
        self.event = self.events.get(name)
        if name in self.publish_failures:
            self.announced, self.publish_failure = False, self.publish_failures[name]
            return
        announced = self.announcements.get(name)
        self.announced = announced is not None
        if announced is not None:
            self.announced_value = announced["value"]
            self.announced_identity = announced["identity"]  # what a recovered baseline is of
            self.change_id = announced["change_id"]

    def fail_if_unpublished(self):
        """Raise if a check or an event of this run failed: for a sensor with one source
        ``SourceError`` (its check) or ``PublishError`` (its event), else ``SourcesFailed``
        naming each failed source (whose other sources were announced all the same).

        Called in ``end``, so the announcing step keeps its card and the run still fails.
        """
        failed = dict(getattr(self, "check_failures", None) or {})
        publish_failures = getattr(self, "publish_failures", None) or {}
        failed.update(publish_failures)
        if not failed:
            return
        count = len(configured_sources(self.flowconfig))
        if count == 1:
            ((name, why),) = failed.items()
            raise (PublishError if name in publish_failures else SourceError)(why)
        raise SourcesFailed(
            "%d of %d sources failed (the others were checked and announced; the next "
            "check retries these):\n%s"
            % (
                len(failed),
                count,
                "\n".join("  %s: %s" % (name, why) for name, why in sorted(failed.items())),
            )
        )

    # ------------------------------------------------------------------ the card

    def show_checks(self, checks, dry_run):
        """Draw the run's checks on the step's ``sensor`` card, if the step has one: with
        several sources a table of every source's outcome first, then each announced,
        settling or failed source. Drawing never fails the step: the events are out and
        the baselines moved by now, so a part that cannot be drawn says so on the card."""
        if CARD_ID not in self._card_ids():
            return
        from .cards import render_sensor_card, render_sources_summary

        card = current.card[CARD_ID]
        sources = configured_sources(self.flowconfig)
        if len(sources) > 1 or self.check_failures:
            rows = []
            for watched in sources:
                name = watched.name
                check = checks.get(name)
                rows.append(
                    {
                        "source": name,
                        "decision": self.decisions.get(name),
                        "published": check.published if check else None,
                        "event_name": check.event_name if check else None,
                        "failure": self.check_failures.get(name) or self.publish_failures.get(name),
                    }
                )
            self._draw(
                card,
                "the table of sources",
                render_sources_summary,
                card,
                rows,
                dry_run,
                branch=self.sensor_branch(),
            )
        changes = getattr(self, "source_changes", None) or {}
        for name, check in checks.items():
            self._draw(
                card,
                "source %s" % name,
                render_sensor_card,
                card,
                observation=self.observations[name],
                decision=self.decisions[name],
                state=check.state_after,
                published=check.published,
                event_name=check.event_name,
                dry_run=dry_run,
                changes=changes.get(name),
                settle_checks=check.sensor["settle_checks"],
                branch=self.sensor_branch(),
                watching=describe_source(check.data),
                publish_failure=check.publish_failure,
                source=check.name if check.named else None,
            )

    def _draw(self, card, what, render, *args, **kwargs):
        """``render(*args, **kwargs)``; an error becomes a line on the card saying so."""
        from .cards import render_card_problem

        try:
            render(*args, **kwargs)
        except Exception as e:
            render_card_problem(card, what, e)
            print("Card: could not draw %s: %s" % (what, failure_text(e)), file=sys.stderr)

    def _card_ids(self):
        """Ids of the ``@card`` decorators of the running step."""
        step_func = getattr(self, current.step_name, None)
        return {
            d.attributes.get("id")
            for d in getattr(step_func, "decorators", ())
            if getattr(d, "name", None) == "card"
        }
