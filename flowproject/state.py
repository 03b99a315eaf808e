"""The sensor's baseline, stored as one small object beside the flow's artifacts.

Finding "the last value this flow announced in this branch" by walking past runs with the
Metaflow client costs time linear in the number of runs. Instead each branch keeps one JSON
object in the Metaflow datastore (the local ``.metaflow`` folder when local, S3 in production):

    <datastore root>/<FlowName>/sensor_state/<project>/<branch>.json

so a lookup is one read whatever the history. The announced value also stays an artifact of
the run that announced it (``announced_value``), and a missing or unreadable state object is
rebuilt from those artifacts, with a message saying so, never treated as "no baseline" silently.
"""

import io
import json
import sys

from .exceptions import StateError, StateFormatError
from .sensor import Baseline, SensorState
from .sources.observation import fingerprint

_TEXT = {"type": "string"}
_TEXT_OR_NULL = {"type": ["string", "null"]}

# The shape ``SensorState.to_dict`` writes. A document of another shape is unreadable (like
# corrupt JSON): the baseline is rebuilt from run artifacts instead of crashing a check,
# possibly after it published.
STATE_SCHEMA = {
    "type": "object",
    "properties": {
        "version": {"type": "integer"},
        "scope": {
            "type": ["object", "null"],
            "properties": {
                "flow": _TEXT,
                "project": _TEXT_OR_NULL,
                "branch": _TEXT,
                "source": _TEXT,
            },
        },
        "identity": {"type": ["object", "null"]},
        "baseline": {
            "type": ["object", "null"],
            "properties": {
                "value": _TEXT_OR_NULL,
                "fingerprint": _TEXT,
                "change_id": _TEXT,
                "run": _TEXT_OR_NULL,
                "announced_at": _TEXT_OR_NULL,
                "summary": {"type": "object"},
            },
            "required": ["value", "fingerprint", "change_id"],
            "additionalProperties": False,
        },
        "pending": {
            "type": ["object", "null"],
            "properties": {
                "value": _TEXT_OR_NULL,
                "fingerprint": _TEXT,
                "seen": {"type": "integer", "minimum": 0},
                "first_seen_at": _TEXT_OR_NULL,
            },
            "required": ["value", "fingerprint", "seen"],
            "additionalProperties": False,
        },
        "history": {"type": "array", "items": {"type": "object"}},
    },
}


def check_state_document(doc):
    """Raise ``StateFormatError`` naming the first field of ``doc`` that has the wrong shape."""
    from jsonschema import Draft202012Validator

    errors = sorted(Draft202012Validator(STATE_SCHEMA).iter_errors(doc), key=lambda e: list(e.path))
    if errors:
        error = errors[0]
        where = ".".join(str(p) for p in error.path) or "the document"
        # The validator's message quotes the stored value; the field and the rule are enough.
        rule = error.schema.get(error.validator) if isinstance(error.schema, dict) else None
        if error.validator == "type":
            what = "expected %s" % (" or ".join(rule) if isinstance(rule, list) else rule)
        elif error.validator == "required":
            what = "a required field is missing"
        elif error.validator == "additionalProperties":
            what = "unexpected fields"
        else:
            what = "fails %s %s" % (error.validator, json.dumps(rule))
        raise StateFormatError("%s: %s" % (where, what))


def state_path(flow_name, project, branch):
    """Key of a branch's state object, relative to the datastore root."""
    safe_branch = branch.replace("/", "_")
    return "%s/sensor_state/%s/%s.json" % (flow_name, project or "_", safe_branch)


def datastore_storage(flow=None):
    """The datastore storage the running task writes its artifacts to.

    Parameters
    ----------
    flow : FlowSpec, optional
        The running flow. Its task datastore knows the storage the run uses (including
        ``--datastore`` given on the command line); outside a task the configured default
        datastore is used.
    """
    task_datastore = getattr(flow, "_datastore", None) if flow is not None else None
    # Metaflow exposes no public accessor for the storage of a running task.
    storage = getattr(task_datastore, "_storage_impl", None)
    if storage is not None:
        return storage
    from metaflow.metaflow_config import DEFAULT_DATASTORE
    from metaflow.plugins import DATASTORES

    storage_cls = next(d for d in DATASTORES if d.TYPE == DEFAULT_DATASTORE)
    return storage_cls(storage_cls.get_datastore_root_from_config(lambda *a, **k: None))


class StateStore(object):
    """Reads and writes one branch's ``SensorState``.

    Parameters
    ----------
    storage : DataStoreStorage
        From ``datastore_storage()``.
    flow_name, project, branch : str
        Which sensor and branch; runs on another branch never read or move this state.
    """

    def __init__(self, storage, flow_name, project, branch):
        self.storage = storage
        self.flow_name, self.project, self.branch = flow_name, project, branch
        self.path = state_path(flow_name, project, branch)

    def read_raw(self):
        """The stored JSON document, or None when there is none. Raises on unreadable data."""
        with self.storage.load_bytes([self.path]) as loaded:
            for _key, local_path, _meta in loaded:
                if local_path is None:
                    return None
                with open(local_path, "rb") as f:
                    return json.loads(f.read().decode("utf-8"))
        return None

    def load(self, quiet=False, baseline_run=None):
        """The branch's state: from the state object, else recovered from past runs.

        Parameters
        ----------
        quiet : bool
            Do not print where a recovered baseline came from (said once per run, in the
            step that decided).
        baseline_run : str, optional
            When the caller already knows which run announced the baseline (a later step of
            the same run), rebuild from that one run instead of walking the history.

        Returns
        -------
        SensorState
            ``recovered_from`` says where a recovered baseline came from (None when read
            from the state object).
        """
        try:
            doc = self.read_raw()
            if doc is not None:
                check_state_document(doc)
                return SensorState.from_dict(doc)
            why = "no state object at %s" % self.path
        except StateFormatError as e:
            why = "state object at %s is unreadable (wrong shape, %s)" % (self.path, e)
        except Exception as e:  # unreadable: corrupt JSON, wrong shape, storage error
            why = "state object at %s is unreadable (%s)" % (self.path, e.__class__.__name__)
        if baseline_run is not None:
            state = recover_from_run(baseline_run)
        elif quiet:
            state = SensorState()
        else:
            state = recover_from_runs(self.flow_name, self.project, self.branch)
        if not quiet:
            print(
                "Sensor state: %s; %s"
                % (
                    why,
                    "recovered the baseline from run %s" % state.recovered_from
                    if state.baseline is not None
                    else "no earlier run of this branch announced a value, so this is the "
                    "first check",
                ),
                file=sys.stderr,
            )
        return state

    def save(self, state):
        """Write the branch's state (replacing the previous object)."""
        body = json.dumps(state.to_dict(), sort_keys=True, separators=(",", ":")).encode("utf-8")
        try:
            self.storage.save_bytes([(self.path, io.BytesIO(body))], overwrite=True)
        except Exception as e:
            raise StateError(
                "Could not write the sensor state to %s: %s" % (self.path, e)
            ) from None
        return len(body)


def _baseline_of(run):
    """The state announced by ``run`` (a Metaflow client Run), or None if it announced nothing."""
    from metaflow.exception import MetaflowNotFound

    try:
        end = run["end"].task
        if end is None or not end.successful or "announced" not in end or not end["announced"].data:
            return None
        value = end["announced_value"].data
        return SensorState(
            baseline=Baseline(
                value=value,
                fingerprint=fingerprint(value),
                change_id=end["change_id"].data,
                run=run.pathspec,
                announced_at=str(end.finished_at),
            ),
            recovered_from=run.pathspec,
            # Runs from before identities were recorded have none: the current one is adopted.
            identity=end["announced_identity"].data if "announced_identity" in end else None,
        )
    except (KeyError, MetaflowNotFound):
        return None


def recover_from_run(pathspec):
    """The baseline announced by one known run (one lookup, whatever the history)."""
    from metaflow import Run, namespace
    from metaflow.exception import MetaflowNotFound

    namespace(None)
    try:
        return _baseline_of(Run(pathspec)) or SensorState()
    except MetaflowNotFound:
        return SensorState()


def recover_from_runs(flow_name, project, branch):
    """Rebuild the baseline from the newest run of ``branch`` that announced a value.

    This walks past runs with the Metaflow client (linear in history), so it is used only
    when the state object is missing or unreadable. History and any settling value are not
    recovered (they live only in the state object).
    """
    from metaflow import Flow, namespace
    from metaflow.exception import MetaflowNotFound

    namespace(None)
    tags = ["project_branch:%s" % branch]
    if project:
        tags.append("project:%s" % project)
    try:
        runs = Flow(flow_name).runs(*tags)
    except MetaflowNotFound:
        return SensorState()
    for run in runs:  # newest first
        state = _baseline_of(run)
        if state is not None:
            return state
    return SensorState()


def load_listing(run_pathspec, step="start"):
    """The gzip'd listing stored by the run that announced the baseline, or None.

    One run lookup with the Metaflow client (no walk over the history).
    """
    from metaflow import Step, namespace
    from metaflow.exception import MetaflowNotFound

    if not run_pathspec:
        return None
    namespace(None)
    try:
        task = Step("%s/%s" % (run_pathspec, step)).task
        if task is None or "listing" not in task:
            return None
        return task["listing"].data
    except MetaflowNotFound:
        return None
