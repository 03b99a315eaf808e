"""``BaseFlow``: what every flow of the project shares.

It loads ``flowconfig.toml`` (validated before any step runs) and offers the sensor's
operations as short methods, so flow files read like the story they tell:

- ``check_sources()`` / ``announce_changes()``: every source of ``flowconfig.toml``, each
  through its ``SourceAnnouncer`` (``flowproject.announcer``); with one ``[data]`` source
  they are the four calls below;
- ``query()``: check the configured source once, returning an ``Observation``;
- ``decide_change(observation)``: compare it with this branch's baseline;
- ``route_check(...)``: record a check with nothing to announce and go straight to ``end``,
  or go on to the announcing step;
- ``announce(...)``: publish the change as an Argo Event, move the baseline, and show the
  check on the step's ``sensor`` card;
- ``fail_if_unpublished()``: fail the run (in ``end``) when a check or an event failed.
"""

import dataclasses
import functools
import inspect
import os
import sys
from contextvars import ContextVar

from metaflow import Config, FlowSpec, current

from .announcer import UNKNOWN_VERSION, SourceAnnouncer, decide_against, redecide
from .bounded import JobTimeout, run_bounded
from .config import configured_sources, is_multi_source, parse_flowconfig
from .decorators import CARD_ID, SourceDecoratorError, active_session, config_data
from .exceptions import PublishError, SourcesFailed
from .sources import describe_source, failure_text
from .state import datastore_storage

# The announcer of the [data] source while its step decides and routes. Kept here, not on the
# flow object: everything set on the flow becomes an artifact.
_deciding = ContextVar("flowproject_deciding", default=None)


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

    # ------------------------------------------------------------------ checking the source

    def query(self):
        """Check the configured source once.

        Must run in a step decorated with ``@source``, ``@s3`` or ``@snowflake``.

        Returns
        -------
        Observation
            The comparable value (``None`` when absent) and a small summary.
        """
        if is_multi_source(self.flowconfig):
            raise SourceDecoratorError(
                "self.query() checks the one [data] source, and flowconfig.toml names several "
                "([sources.<name>]): call self.check_sources() in step '%s' instead"
                % current.step_name
            )
        active = active_session()
        if active is None:
            raise SourceDecoratorError(
                "self.query() was called in step '%s', which has no data source: add "
                "@source (or @s3 / @snowflake) above @step." % current.step_name
            )
        module, data, session = active
        return module.check(data, session, self.source_announcer().cursor())

    # ------------------------------------------------------------------ baseline and decision

    def sensor_branch(self):
        """The ``@project`` branch whose baseline this run reads and moves (``default`` without
        ``@project``)."""
        return current.get("branch_name", None) or "default"

    def state_store(self):
        """The ``StateStore`` of this flow's project branch (its ``[data]`` source)."""
        return self.source_announcer().store

    def source_announcer(self, watched=None):
        """The ``SourceAnnouncer`` of one source of this run (the ``[data]`` one by default)."""
        if watched is None:
            watched = configured_sources(self.flowconfig)[0]
        return SourceAnnouncer(
            watched,
            current.flow_name,
            current.get("project_name", None),
            self.sensor_branch(),
            self.run_pathspec(),
            datastore_storage(self),
        )

    def decide_change(self, observation, force=False, dry_run=False):
        """Compare ``observation`` with this branch's baseline.

        For a listing (``files_metadata``) it also keeps what the card and the next diff
        need, and nothing more: when the decision is to announce or the change is settling,
        the objects added, removed and modified since the last announced listing
        (``self.changes``); when this run will announce, the gzip'd listing itself
        (``self.listing``). The temporary listing file is deleted either way, and
        ``self.observation`` no longer points at it.

        Parameters
        ----------
        observation : Observation
            From ``query()``.
        force : bool
            Publish even if nothing changed.
        dry_run : bool
            Decide and report, store no listing.

        Returns
        -------
        Decision
            Also stored as artifacts by the caller; its ``reason`` says why.
        """
        announcer = self.source_announcer()
        _deciding.set(announcer)
        decision = announcer.decide(observation, force=force, dry_run=dry_run)
        self.decide_options, self.state_version = announcer.options, announcer.state_version
        if announcer.changes is not None:
            self.changes = announcer.changes
        if announcer.listing is not None:
            self.listing = announcer.listing
        if observation.detail is not None and getattr(self, "observation", None) is observation:
            self.observation = dataclasses.replace(observation, detail=None)
        return decision

    def route_check(self, observation, decision, dry_run=False):
        """Where the run goes after deciding: ``"end"`` when there is nothing to announce,
        else ``"announce"``.

        An ``unchanged`` or ``reverted`` check (not a dry run) is recorded in the branch's
        history here, by a compare-and-swap write that never fails the run, and the run goes
        straight to ``end``: no card, no other write. Every other decision (to publish,
        accept, settle, a dry run, ...) goes to the announcing step, which shows it on the card.

        Parameters
        ----------
        observation : Observation
        decision : Decision
            From ``decide_change()``.
        dry_run : bool

        Returns
        -------
        str
            ``"end"`` or ``"announce"``, the condition of the step's ``self.next({...})``.
        """
        announcer = _deciding.get() or self.source_announcer()
        if not announcer.is_quiet(decision, dry_run):
            return "announce"
        recorded = announcer.record_quiet(observation, decision)
        if recorded is not decision:  # another run wrote meanwhile: say so
            print(recorded.reason)
            if getattr(self, "decision", None) is decision:
                self.decision = recorded
        # What only the announcing step reads: an unchanged check stores nothing it won't use.
        for name in ("decide_options", "state_version"):
            self.__dict__.pop(name, None)
        return "end"

    def run_pathspec(self):
        """``FlowName/run_id`` of this run, as recorded in the state."""
        return "%s/%s" % (current.flow_name, current.run_id)

    def decide_against(self, state, observation, **decide_kwargs):
        """``decide()`` for this flow and branch, aware of other runs announcing right now
        (``announcer.decide_against``); the keyword arguments are kept as the
        ``decide_options`` artifact so the announcing step re-decides alike."""
        self.decide_options = dict(decide_kwargs)
        return decide_against(
            state,
            observation,
            current.flow_name,
            self.sensor_branch(),
            self.run_pathspec(),
            **decide_kwargs,
        )

    def redecide(self, decided, observation, state):
        """The decision after another run wrote the state that ``decided`` was made against
        (``announcer.redecide``, with the ``decide_options`` of this run)."""
        return redecide(
            decided,
            observation,
            state,
            getattr(self, "decide_options", None),
            current.flow_name,
            self.sensor_branch(),
            self.run_pathspec(),
        )

    # ------------------------------------------------------------------ announcing

    def announce(self, observation, decision, dry_run=False):
        """Publish the decision's event, record the new state of this branch, show the card.

        The baseline moves only after the event was published. If publishing fails, the
        failed attempt is kept in the history and shown on the card, the error is kept as
        the ``publish_failure`` artifact, and ``fail_if_unpublished()`` (in ``end``) fails
        the run; the next check announces the change again. ``dry_run`` publishes nothing and
        writes nothing. A run that moved the baseline keeps it as artifacts: ``announced``,
        ``announced_value``, ``change_id``. When the step has the ``sensor`` card
        (``@announcement`` adds it) the check is shown on it.

        Parameters
        ----------
        observation : Observation
        decision : Decision
        dry_run : bool

        Returns
        -------
        dict or None
            The published payload, with the event ``name`` and ``id``; None if nothing was
            published.
        """
        announcer = self.source_announcer()
        announcer.options = getattr(self, "decide_options", None)
        decided = decision
        decision = announcer.announce(
            observation,
            decision,
            getattr(self, "state_version", UNKNOWN_VERSION),
            current.get("branch_name", None),
            current.run_id,
            dry_run=dry_run,
        )
        if decision is not decided and getattr(self, "decision", None) is decided:
            self.decision = decision
        if announcer.publish_failure:
            self.announced = False
            self.publish_failure = announcer.publish_failure
        else:
            # The baseline also stays an artifact of the run that set it, so that a lost
            # state object can be rebuilt from past runs (state.recover_from_runs).
            self.announced = decision.moves_baseline and not dry_run
            if self.announced:
                self.announced_value = observation.value
                self.announced_identity = decision.identity  # what a recovered baseline is of
                self.change_id = decision.change_id
        self.show_check(
            observation,
            decision,
            announcer.state_after,
            announcer.published,
            announcer.event_name,
            dry_run,
        )
        return announcer.published

    def fail_if_unpublished(self):
        """Raise if a check or an event of this run failed: ``PublishError`` for the
        ``[data]`` source, ``SourcesFailed`` naming each failed source of a multi-source
        sensor (whose other sources were announced all the same).

        Called in ``end``, so the announcing step keeps its card and the run still fails.
        """
        failure = getattr(self, "publish_failure", None)
        if failure:
            raise PublishError(failure)
        failed = dict(getattr(self, "check_failures", None) or {})
        for name, why in (getattr(self, "publish_failures", None) or {}).items():
            failed[name] = why
        if failed:
            raise SourcesFailed(
                "%d of %d sources failed (the others were checked and announced; the next "
                "check retries these):\n%s"
                % (
                    len(failed),
                    len(configured_sources(self.flowconfig)),
                    "\n".join("  %s: %s" % (name, why) for name, why in sorted(failed.items())),
                )
            )

    # ------------------------------------------------------------------ many sources

    def check_sources(self, force=False, dry_run=False):
        """Check every source of ``flowconfig.toml`` and decide for each; return the route.

        With one ``[data]`` source this is ``query()``, ``decide_change()`` and
        ``route_check()`` (artifacts ``observation``, ``decision``, ``route``). With
        ``[sources.<name>]`` tables every source is checked and decided in its own thread,
        at most ``[sensor] check_concurrency`` at once (also the bound on the threads and
        connections of all listings together), each within ``[sensor] source_timeout``
        seconds; one source's failure does not stop the others (artifacts
        ``observations``, ``decisions``, ``check_failures``, ``listings``, ``checked``).

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
        if not is_multi_source(self.flowconfig):
            self.observation = self.query()
            self.decision = self.decide_change(self.observation, force=force, dry_run=dry_run)
            print(self.decision.reason)
            # Nothing to announce (unchanged, reverted): recorded in the history, to end.
            self.route = self.route_check(self.observation, self.decision, dry_run=dry_run)
            return self.route
        sources = configured_sources(self.flowconfig)
        sensor = self.flowconfig.sensor
        workers = min(sensor.check_concurrency, len(sources))
        # One bound for the run: each listing gets its share of the threads.
        share = max(1, sensor.check_concurrency // workers)
        announcers = {w.name: self.source_announcer(w) for w in sources}

        def check_and_decide(announcer):
            data = announcer.data
            if "list_concurrency" in data:
                data = dict(data, list_concurrency=min(data["list_concurrency"], share))
            observation, requests = announcer.check(data)
            decision = announcer.decide(observation, force=force, dry_run=dry_run)
            announcer.say(decision.reason)
            if announcer.is_quiet(decision, dry_run):
                recorded = announcer.record_quiet(observation, decision)
                if recorded is not decision:
                    announcer.say(recorded.reason)
                decision = recorded
            return dataclasses.replace(observation, detail=None), decision, requests

        outcomes = run_bounded(
            {name: functools.partial(check_and_decide, a) for name, a in announcers.items()},
            workers,
            sensor.source_timeout,
        )
        self.observations, self.decisions, self.check_failures = {}, {}, {}
        self.listings, self.checked, self.state_versions, self.source_options = {}, {}, {}, {}
        changes = {}
        for name, (result, error) in outcomes.items():
            announcer = announcers[name]
            self.checked[name] = {"source": describe_source(announcer.data), "requests": []}
            if isinstance(error, JobTimeout):
                self.check_failures[name] = (
                    "check failed: it did not finish within [sensor] source_timeout = %d "
                    "seconds" % sensor.source_timeout
                )
            elif error is not None:
                self.check_failures[name] = "check failed: %s" % failure_text(error)
            if error is not None:
                announcer.say(self.check_failures[name], file=sys.stderr)
                continue
            observation, decision, self.checked[name]["requests"] = result
            self.observations[name], self.decisions[name] = observation, decision
            if announcer.listing is not None:
                self.listings[name] = announcer.listing
            if announcer.changes is not None:
                changes[name] = announcer.changes
            if not announcer.is_quiet(decision, dry_run):
                self.state_versions[name] = announcer.state_version
                self.source_options[name] = announcer.options
        if changes:
            self.source_changes = changes
        loud = self.state_versions or self.check_failures
        self.route = "announce" if loud else "end"
        return self.route

    def announce_changes(self, dry_run=False):
        """Announce what ``check_sources`` decided, and show every check on the card.

        With one ``[data]`` source this is ``announce()`` (artifact ``event``). With several,
        each source that has something to announce is claimed, published and committed in
        its own thread (a webhook down for one event does not hold the others back); the
        card shows every source. Artifacts: ``events`` ({source: payload}),
        ``publish_failures``, and ``announcements`` ({source: {value, change_id,
        identity}} for each baseline moved, from which a lost state is rebuilt).

        Parameters
        ----------
        dry_run : bool
            Publish and write nothing; say what would be published.
        """
        if not is_multi_source(self.flowconfig):
            self.event = self.announce(self.observation, self.decision, dry_run=dry_run)
            return
        sensor = self.flowconfig.sensor
        announcers = {
            w.name: self.source_announcer(w)
            for w in configured_sources(self.flowconfig)
            if w.name in self.state_versions
        }
        for name, announcer in announcers.items():
            announcer.options = self.source_options[name]

        def announce_one(name):
            return announcers[name].announce(
                self.observations[name],
                self.decisions[name],
                self.state_versions[name],
                current.get("branch_name", None),
                current.run_id,
                dry_run=dry_run,
            )

        outcomes = run_bounded(
            {name: functools.partial(announce_one, name) for name in announcers},
            min(sensor.check_concurrency, max(1, len(announcers))),
            # A publish ends within publish_timeout; the state writes around it are short.
            sensor.publish_timeout + 120,
        )
        self.events, self.publish_failures, self.announcements = {}, {}, {}
        shown = {}
        for name, (decision, error) in outcomes.items():
            announcer = announcers[name]
            if error is not None:
                self.publish_failures[name] = "announcing failed: %s" % failure_text(error)
                announcer.say(self.publish_failures[name], file=sys.stderr)
                continue
            self.decisions[name] = decision
            if announcer.publish_failure:
                self.publish_failures[name] = announcer.publish_failure
            elif announcer.published:
                self.events[name] = announcer.published
            if decision.moves_baseline and not dry_run and not announcer.publish_failure:
                self.announcements[name] = {
                    "value": self.observations[name].value,
                    "change_id": decision.change_id,
                    "identity": decision.identity,
                }
            shown[name] = announcer
        self.show_checks(shown, dry_run)

    def show_check(self, observation, decision, state, published, name, dry_run):
        """Draw the check on the step's ``sensor`` card, if the step has one."""
        if CARD_ID not in self._card_ids():
            return
        from .cards import render_sensor_card  # metaflow.cards: only steps with a card

        render_sensor_card(
            current.card[CARD_ID],
            observation=observation,
            decision=decision,
            state=state,
            published=published,
            event_name=name,
            dry_run=dry_run,
            changes=getattr(self, "changes", None),
            settle_checks=self.flowconfig.sensor.settle_checks,
            branch=self.sensor_branch(),
            watching=describe_source(config_data(self)),
            publish_failure=getattr(self, "publish_failure", None),
        )

    def show_checks(self, announcers, dry_run):
        """Draw a multi-source check on the step's ``sensor`` card, if the step has one: a
        table of every source's outcome, then each announced, settling or failed source."""
        if CARD_ID not in self._card_ids():
            return
        from .cards import render_sensor_card, render_sources_summary

        card = current.card[CARD_ID]
        rows = []
        for watched in configured_sources(self.flowconfig):
            name = watched.name
            announcer = announcers.get(name)
            rows.append(
                {
                    "source": name,
                    "decision": self.decisions.get(name),
                    "published": announcer.published if announcer else None,
                    "event_name": announcer.event_name if announcer else None,
                    "failure": self.check_failures.get(name) or self.publish_failures.get(name),
                }
            )
        render_sources_summary(card, rows, dry_run, branch=self.sensor_branch())
        changes = getattr(self, "source_changes", None) or {}
        for name, announcer in announcers.items():
            render_sensor_card(
                card,
                observation=self.observations[name],
                decision=self.decisions[name],
                state=announcer.state_after,
                published=announcer.published,
                event_name=announcer.event_name,
                dry_run=dry_run,
                changes=changes.get(name),
                settle_checks=announcer.sensor["settle_checks"],
                branch=self.sensor_branch(),
                watching=describe_source(announcer.data),
                publish_failure=announcer.publish_failure,
                source=name,
            )

    def _card_ids(self):
        """Ids of the ``@card`` decorators of the running step."""
        step_func = getattr(self, current.step_name, None)
        return {
            d.attributes.get("id")
            for d in getattr(step_func, "decorators", ())
            if getattr(d, "name", None) == "card"
        }
