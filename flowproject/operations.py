"""Seeing and steering a sensor's stored state: what ``flowproject status``, ``reset`` and
``replay`` do, as plain functions.

They read and write the same state objects as the flows (``flowproject.state``), through the
same compare-and-swap, and decide with the same rules (``flowproject.sensor``), so a command
never applies a second copy of them:

- ``find_states(storage)``: every sensor state object in the datastore (one per branch, or
  one per source of a branch in the multi-source form);
- ``status_of(store)``: one branch's (source's) state as a dict of stable keys (``--json``);
- ``reset_branch(store)``: the next check becomes a first check (a *reset marker* stops the
  recovery of a missing state from past runs); with ``config`` the source's current value
  becomes the baseline without an event;
- ``replay_last(store)``: re-publish the branch's last announced event, ``replayed: true``.
"""

import json
import os

from .config import DEFAULT_SOURCE, configured_sources, source_named
from .exceptions import PublishError, ReplayError, StateConflict, StateError
from .schema_check import json_type
from .sensor import SensorState, advance, decide, utc_now
from .state import (
    Claim,
    StateStore,
    check_state_document,
    claim_of_another_run,
    datastore_storage,
    list_folder,
    state_path,
)

# Keys ArgoEvent adds to a published payload (and the sensor's artifact adds): not re-sent.
_EVENT_OWN_KEYS = ("name", "id", "timestamp", "utc_date", "generated-by-metaflow")

# History entries written by these commands, not by a check of the source.
NOT_CHECKS = ("reset", "replayed")

# How many history entries ``status_of`` returns by default.
STATUS_HISTORY = 10


def current_user():
    """Who runs the command, as Metaflow names users (``METAFLOW_USER``, ``USER``...)."""
    from metaflow.util import get_username

    return get_username() or "unknown"


def project_branch(branch=None, production=False, user=None):
    """The ``@project`` branch a run with these options reads and moves, as Metaflow names it.

    Parameters
    ----------
    branch : str, optional
        As ``--branch`` of a run (``feature_x`` -> ``test.feature_x``; with ``production``
        ``prod.feature_x``). A full branch name (with a dot: ``user.alice``, ``prod``,
        ``test.feature_x``) is taken as it is; Metaflow's own branch names have no dot.
    production : bool
        As ``--production`` (``prod``).
    user : str, optional
        For the default ``user.<name>`` branch; the current user by default.
    """
    if branch and ("." in branch or branch == "prod"):
        return branch
    if branch:
        return ("prod.%s" if production else "test.%s") % branch
    if production:
        return "prod"
    return "user.%s" % os.environ.get("METAFLOW_OWNER", user or current_user())


class NoDatastore(StateError):
    """There is no local datastore to read: no ``.metaflow`` folder where Metaflow looks."""

    headline = "No datastore"


def reading_storage():
    """The configured datastore's storage, for commands that only read state.

    Unlike ``state.datastore_storage()`` (and Metaflow's runs), it never creates a
    ``.metaflow`` folder in the current one when none is found.

    Returns
    -------
    DataStoreStorage

    Raises
    ------
    NoDatastore
        The local datastore was not found; the message says where it was looked for.
    """
    from metaflow.metaflow_config import DEFAULT_DATASTORE
    from metaflow.plugins import DATASTORES

    storage_cls = next(d for d in DATASTORES if d.TYPE == DEFAULT_DATASTORE)
    root = storage_cls.get_datastore_root_from_config(lambda *a, **k: None, create_on_absent=False)
    if root is None:
        raise NoDatastore(
            "no %s folder in %s or any folder above it, where Metaflow's local datastore is "
            "looked for (METAFLOW_DATASTORE_SYSROOT_LOCAL is not set): run the command where "
            "your flows run, or set METAFLOW_DATASTORE_SYSROOT_LOCAL"
            % (getattr(storage_cls, "DATASTORE_DIR", ".metaflow"), os.getcwd())
        )
    return storage_cls(root)


def find_states(storage=None, flow=None, project=None, branch=None, source=None):
    """Every sensor state object in the datastore, optionally of one flow, project, branch.

    Finds the single-source form's ``<branch>.json`` and each named source's
    ``<branch>/<source>.json`` beside it.

    Parameters
    ----------
    storage : DataStoreStorage, optional
        Default: the configured datastore (``state.datastore_storage()``).
    flow, project, branch : str, optional
        Keep only these (``branch`` as stored: ``user.alice``, ``test.x``, ``prod``).
    source : str, optional
        Keep only this source (``"default"`` for the single-source form's object).

    Returns
    -------
    list of StateStore
        Sorted by flow, project, branch and source (the single-source form's object first).

    Raises
    ------
    StateError
        If the store refused a listing or answered it with something unreadable.
    """
    storage = storage or datastore_storage()

    def names(prefix):
        # A folder that does not exist lists as empty. A listing the store refused or answered
        # with something unreadable is not "no state": status would say so, and a teardown
        # would delete nothing and report nothing to delete.
        try:
            return list_folder(storage, prefix)
        except Exception as e:
            raise StateError(
                "Could not list the sensor states in %s: %s"
                % (storage.full_uri(prefix), " ".join(str(e).split()) or type(e).__name__)
            ) from None

    def json_name(file_name, is_file):
        return file_name[: -len(".json")] if is_file and file_name.endswith(".json") else None

    found = []
    for flow_name, is_file in names(""):
        if is_file or (flow and flow_name != flow):
            continue
        for project_dir, is_file in names("%s/sensor_state" % flow_name):
            project_name = None if project_dir == "_" else project_dir
            if is_file or (project and project_name != project):
                continue
            folder = "%s/sensor_state/%s" % (flow_name, project_dir)
            for entry, is_file in names(folder):
                # <branch>.json: the single-source form; <branch>/: one object per source.
                name = json_name(entry, is_file) if is_file else entry
                if name is None or (branch and name != branch.replace("/", "_")):
                    continue
                if is_file:
                    found.append((flow_name, project_name, name, DEFAULT_SOURCE))
                    continue
                for file_name, in_file in names("%s/%s" % (folder, entry)):
                    source_name = json_name(file_name, in_file)
                    if source_name and source_name != DEFAULT_SOURCE:
                        found.append((flow_name, project_name, name, source_name))
    if source:
        found = [f for f in found if f[3] == source]
    found.sort(key=lambda f: (f[0], f[1] or "", f[2], f[3] != DEFAULT_SOURCE, f[3]))
    return [StateStore(storage, *f[:3], source=f[3]) for f in found]


def state_store(flow, project, branch, storage=None, source=DEFAULT_SOURCE):
    """The ``StateStore`` of one flow's branch and source (whether or not it has an object)."""
    return StateStore(storage or datastore_storage(), flow, project, branch, source=source)


def known_sources(flow, project, branch, config=None, storage=None):
    """The sources of one branch: those ``config`` names, else those stored for the branch.

    Parameters
    ----------
    flow, project, branch : str
    config : dict, optional
        The parsed ``flowconfig.toml``: its sources (``["default"]`` for the single-source
        form) whatever the datastore holds.
    storage : DataStoreStorage, optional
        Default: the configured datastore.

    Returns
    -------
    list of str
        In file order (config) or sorted (datastore); ``["default"]`` when nothing is known.
    """
    if config is not None:
        return [w.name for w in configured_sources(config)]
    stored = [s.source for s in find_states(storage, flow=flow, project=project, branch=branch)]
    return stored or [DEFAULT_SOURCE]


def _whole_value(entry, state):
    """``entry`` (a history entry) with its value whole where the state holds it.

    The sensor stores a history entry's value shortened to 40 characters (``...``); when the
    entry's fingerprint is the baseline's or the settling value's, that value is the whole
    one. Other shortened values stay as stored (``value_shortened`` says so)."""
    entry = dict(entry)
    value, short_print = entry.get("value"), entry.get("fingerprint")
    if not (isinstance(value, str) and value.endswith("...")):
        return entry
    for known in (state.baseline, state.pending):
        whole = getattr(known, "value", None)
        if (
            isinstance(whole, str)
            and isinstance(short_print, str)
            and short_print
            and (known.fingerprint or "").startswith(short_print)
            and whole.startswith(value[:-3])
        ):
            entry["value"] = whole
            return entry
    entry["value_shortened"] = True
    return entry


# The fields of a history entry and the JSON types each may have (others are kept as stored).
_HISTORY_FIELDS = {
    "at": ("string",),
    "kind": ("string",),
    "run": ("string", "null"),
    "by": ("string", "null"),
    "value": ("string", "null"),
    "change_id": ("string", "null"),
    "fingerprint": ("string",),
    "published": ("boolean",),
    "failed": ("boolean",),
    "to_current": ("boolean",),
    "objects": ("integer",),
    "bytes": ("integer",),
}
_RESET_FIELDS = {"at": ("string",), "by": ("string", "null"), "to_current": ("boolean",)}


def _json_type(value):
    found = json_type(value)
    return found if found in _JSON_NAMES else "unknown"


_JSON_NAMES = ("null", "boolean", "integer", "number", "string", "array", "object")


def shape_problems(fields, entry, where):
    """One line per field of ``entry`` whose type is not one of ``fields``' (a hand-edited
    or foreign object): ``history[2].run: expected string or null, found 123 (integer)``."""
    problems = []
    for name, kinds in fields.items():
        if name not in entry:
            continue
        found = _json_type(entry[name])
        if found not in kinds:
            shown = json.dumps(entry[name], sort_keys=True)
            if len(shown) > 60:
                shown = shown[:57] + "..."
            problems.append(
                "%s.%s: expected %s, found %s (%s)"
                % (where, name, " or ".join(kinds), shown, found)
            )
    return problems


def status_of(store, history=STATUS_HISTORY):
    """One branch's stored state, for people and scripts.

    Parameters
    ----------
    store : StateStore
    history : int
        How many of the newest history entries to include.

    Returns
    -------
    dict
        Stable keys: ``flow``, ``project``, ``branch``, ``location``, ``stored`` (whether
        the object exists: a source no check has seen yet has none), ``carries_over`` (for
        a named source without an object: the single-source form's object whose baseline its
        first check takes over, same identity; else None), ``error`` (why the
        object is unreadable, else None), ``source`` (name and identity of the watched
        source), ``baseline`` (``value``, ``change_id``, ``announced_at``, ``run``),
        ``last_check`` (the newest history entry of a check, not of a reset or replay),
        ``pending`` (``value``, ``seen``,
        ``first_seen_at``), ``failed_publishes`` (history entries whose publish failed),
        ``claim`` (a run announcing right now: ``run``, ``change_id``, ``expires_at``,
        ``live``), ``reset`` (``at``, ``by``, ``to_current`` of a reset not yet followed by a
        check), ``history`` (newest last) and ``problems`` (one line per oddly-shaped
        field of a readable object, e.g. a hand-edited ``history[2].run: expected string or
        null, found 123 (integer)``; those fields are kept as stored). Values are whole: a
        history entry's value the sensor stored shortened is completed from the baseline or
        the settling value of the same fingerprint, else kept as stored with
        ``value_shortened: true``.
    """
    status = {
        "flow": store.flow_name,
        "project": store.project,
        "branch": store.branch,
        "location": store.storage.full_uri(store.path),
        "stored": True,
        "carries_over": None,
        "error": None,
        # A named source is known by its path before its object is read.
        "source": (
            None if store.source == DEFAULT_SOURCE else {"name": store.source, "identity": None}
        ),
        "baseline": None,
        "last_check": None,
        "pending": None,
        "failed_publishes": [],
        "claim": None,
        "reset": None,
        "history": [],
        "problems": [],
    }
    try:
        doc, _version = store.read_versioned()
        if doc is None:
            status["stored"] = False
            # A named source of the single-source form's identity takes over its baseline.
            if store.source != DEFAULT_SOURCE and store.identity is not None:
                if store.load(quiet=True).baseline is not None:
                    legacy = state_path(store.flow_name, store.project, store.branch)
                    status["carries_over"] = store.storage.full_uri(legacy)
            return status
        check_state_document(doc)
    except Exception as e:  # unreadable: shown as such, never as an empty state
        status["error"] = "%s: %s" % (e.__class__.__name__, e)
        return status
    try:
        state = SensorState.from_dict(doc)
    except Exception as e:  # a shape the schema lets through but the state cannot hold
        status["error"] = "%s: %s" % (e.__class__.__name__, e)
        return status
    state.claim = Claim.from_dict(doc.get("claim"))
    problems = status["problems"]
    if doc.get("claim") is not None and state.claim is None:
        problems.append("claim: not a claim (run, change_id, expires_at); ignored")
    if state.reset is not None:
        problems += shape_problems(_RESET_FIELDS, state.reset, "reset")
    for i, entry in enumerate(state.history):
        problems += shape_problems(_HISTORY_FIELDS, entry, "history[%d]" % i)
    if state.scope and state.scope.get("branch"):
        status["branch"] = state.scope["branch"]
    status["source"] = {
        "name": (state.scope or {}).get("source") or store.source,
        "identity": state.identity,
    }
    if state.baseline is not None:
        status["baseline"] = {
            "value": state.baseline.value,
            "change_id": state.baseline.change_id,
            "announced_at": state.baseline.announced_at,
            "run": state.baseline.run,
        }
    checks = [h for h in state.history if h.get("kind") not in NOT_CHECKS]
    if checks:
        status["last_check"] = _whole_value(checks[-1], state)
    if state.pending is not None:
        status["pending"] = {
            "value": state.pending.value,
            "seen": state.pending.seen,
            "first_seen_at": state.pending.first_seen_at,
        }
    status["failed_publishes"] = [_whole_value(h, state) for h in state.history if h.get("failed")]
    if state.claim is not None:
        status["claim"] = dict(state.claim.to_dict(), live=state.claim.live())
    status["reset"] = state.reset
    status["history"] = (
        [_whole_value(h, state) for h in state.history[-history:]] if history else []
    )
    return status


def reset_marker(by, at=None, to_current=False, history=()):
    """A state that makes the next check of its branch a first check (see ``SensorState``)."""
    return SensorState(
        history=list(history),
        reset={"at": at or utc_now(), "by": by, "to_current": to_current},
    )


def reset_branch(store, config=None, to_current=False, by=None):
    """Make the next check of a branch a first check, or accept the source's current value.

    Written by compare-and-swap: a reset never overwrites a run that is announcing a change
    right now (``StateConflict``), and is retried if a check wrote meanwhile.

    Parameters
    ----------
    store : StateStore
        The branch and source to reset.
    config : dict, optional
        The parsed ``flowconfig.toml`` (needed with ``to_current``); it names the store's
        source.
    to_current : bool
        Check the source now (with the flow's own source code) and make its value the
        baseline without an event, e.g. after a backfill the consumers already processed.
    by : str, optional
        Who resets, recorded in the marker and the history; the current user by default.

    Returns
    -------
    SensorState
        The state written.
    """
    from .sources import check_source, watched_source

    by = by or current_user()
    at = utc_now()
    observation = decision = None
    if to_current:
        if config is None:
            raise ValueError("reset_branch(to_current=True) needs the flowconfig (config=...)")
        # The store's source as flowconfig.toml names it ([data] is the "default" one).
        watched = source_named(config, store.source)
        observation = check_source(watched.data)
        # The flow's own decision on an empty baseline, told to accept the first value.
        decision = decide(
            observation,
            SensorState(),
            store.flow_name,
            store.branch,
            on_first_check="accept",
            **watched_source(watched.data, store.project, source=store.source),
        )
        history_size = watched.sensor["history_size"]

    def change(state):
        claim = claim_of_another_run(state, run=None)
        if claim is not None:
            # Writing would clear its claim, and its commit would then move the baseline.
            raise StateConflict(
                "run %s is announcing change %s right now (claimed until %s); try again once "
                "it has finished" % (claim.run, claim.change_id, claim.expires_at)
            )
        entry = {"at": at, "run": None, "kind": "reset", "published": False, "by": by}
        if not to_current:
            marker = reset_marker(by, at, history=state.history + [entry])
            marker.scope = state.scope
            return marker, None
        kept = SensorState(history=state.history, scope=state.scope)
        new_state = advance(kept, observation, decision, None, False, history_size, at=at)
        new_state.history[-1].update(kind="reset", to_current=True, by=by)
        new_state.reset = {"at": at, "by": by, "to_current": True}
        return new_state, None

    # quiet: a missing object is not recovered from runs, the reset replaces it anyway.
    state, version = store.load_versioned(quiet=True)
    new_state, _ = store.update(change, state, version)
    return new_state


def describe_store(store):
    """``SensorFlow branch user.alice``, with ``source NAME of`` before it for a named source."""
    where = "%s branch %s" % (store.flow_name, store.branch)
    return where if store.source == DEFAULT_SOURCE else "source %s of %s" % (store.source, where)


def _published_event(run_pathspec, source):
    """The payload ``run_pathspec`` published for ``source``, or None; MetaflowNotFound when
    the run is gone.

    Read from ``end`` (``event``, or ``events`` {source: payload} of a multi-source run),
    else from ``announce_change``, which set it: a run stopped in ``end`` after it published
    and committed (Ctrl-C, a killed pod) has no artifacts there."""
    from metaflow import Run, Step
    from metaflow.exception import MetaflowNotFound

    Run(run_pathspec)  # MetaflowNotFound when the run is gone
    key = "event" if source == DEFAULT_SOURCE else "events"
    for step in ("end", "announce_change"):
        try:
            task = Step("%s/%s" % (run_pathspec, step)).task
        except MetaflowNotFound:  # not reached (stopped before it), or straight to end
            continue
        if task is not None and key in task:
            data = task[key].data
            return data if source == DEFAULT_SOURCE else (data or {}).get(source)
    return None


def last_announced_event(store, state=None):
    """The event that announced the baseline of the store's source: ``(name, payload)``.

    Rebuilt from the announcing run's artifacts (``event``, or ``events[source]`` of a
    multi-source run; one lookup with the Metaflow client), so it is exactly what was
    published.

    Raises
    ------
    ReplayError
        No baseline, or it was set without an event (accepted first value, absent first
        check, ``reset --to-current``), or the run's artifacts are gone.
    """
    from metaflow import namespace
    from metaflow.exception import MetaflowNotFound

    if state is None:
        state = store.load(quiet=True)
    where = describe_store(store)
    baseline = state.baseline
    claim = getattr(state, "claim", None)
    if baseline is None and claim is not None and claim.live():
        raise ReplayError(
            "%s has no announced value yet: run %s is announcing change %s right now, or was "
            "stopped before committing it (its claim lapses at %s and the next check announces "
            "again); replay once a run has committed it"
            % (where, claim.run, claim.change_id, claim.expires_at)
        )
    if baseline is None:
        raise ReplayError("%s has no announced value (no baseline)" % where)
    if not baseline.run:
        raise ReplayError(
            "the baseline of %s was set without an event (flowproject reset --to-current)" % where
        )
    namespace(None)
    try:
        event = _published_event(baseline.run, store.source)
    except MetaflowNotFound:
        raise ReplayError(
            "run %s, which announced the baseline of %s, is not found in the metadata"
            % (baseline.run, where)
        ) from None
    if not event:
        raise ReplayError(
            "run %s set the baseline of %s without publishing an event (accepted or absent "
            "first check)" % (baseline.run, where)
        )
    payload = {k: v for k, v in event.items() if k not in _EVENT_OWN_KEYS}
    if payload.get("change_id") != baseline.change_id:
        raise ReplayError(
            "the event of run %s is not the baseline's (change %s, not %s)"
            % (baseline.run, payload.get("change_id"), baseline.change_id)
        )
    return event["name"], payload


def _webhook_configured(dry_run_command):
    """Raise ``PublishError`` when there is no webhook to publish to, advising
    ``dry_run_command`` (a command that shows the event without publishing)."""
    from metaflow.metaflow_config import ARGO_EVENTS_WEBHOOK_URL

    if not ARGO_EVENTS_WEBHOOK_URL:
        raise PublishError(
            "METAFLOW_ARGO_EVENTS_WEBHOOK_URL is not set, so there is nowhere to publish. Set "
            "it (or ARGO_EVENTS_WEBHOOK_URL in your Metaflow config), or see the event "
            "without publishing: %s" % dry_run_command
        )


def replay_last(store, by=None, dry_run=False, dry_run_command="flowproject replay --dry-run"):
    """Re-publish the branch's last announced event with its change id and ``replayed: true``.

    Published with ``events.publish`` to ``METAFLOW_ARGO_EVENTS_WEBHOOK_URL``; the replay is
    then recorded in the branch's history by compare-and-swap (the baseline does not move).

    Parameters
    ----------
    store : StateStore
    by : str, optional
        Who replays, for the history; the current user by default.
    dry_run : bool
        Find the event, publish and record nothing.
    dry_run_command : str
        The command that shows the event without publishing, advised when no webhook is
        configured (the CLI passes the user's own options).

    Returns
    -------
    dict
        ``name`` and ``payload`` of the event sent, and its ``id`` (None for a dry run).
    """
    from .events import publish

    by = by or current_user()
    state, version = store.load_versioned(quiet=True)
    name, payload = last_announced_event(store, state)
    payload = dict(payload, replayed=True)
    if dry_run:
        return {"name": name, "payload": payload, "id": None}
    _webhook_configured(dry_run_command)
    event_id = publish(name, payload)
    at = utc_now()
    entry = {
        "at": at,
        "run": None,
        "kind": "replayed",
        # Whole: the history is read by scripts (status --json); the table shortens it.
        "value": state.baseline.value,
        "change_id": payload["change_id"],
        "published": True,
        "by": by,
    }

    def change(current):
        # A live claim of a run stays: this write only appends to the history (the next
        # check trims it to history_size).
        current.history = current.history + [entry]
        return current, current.claim

    store.update(change, state, version)
    return {"name": name, "payload": payload, "id": event_id}


__all__ = [
    "NoDatastore",
    "STATUS_HISTORY",
    "current_user",
    "describe_store",
    "find_states",
    "known_sources",
    "last_announced_event",
    "project_branch",
    "reading_storage",
    "replay_last",
    "reset_branch",
    "reset_marker",
    "state_store",
    "status_of",
]
