"""The sensor's baseline, stored as one small object beside the flow's artifacts.

Finding "the last value this flow announced in this branch" by walking past runs with the
Metaflow client costs time linear in the number of runs. Instead each branch keeps one JSON
object in the Metaflow datastore (the local ``.metaflow`` folder when local, S3 in production):

    <datastore root>/<FlowName>/sensor_state/<project>/<branch>.json

(``<branch>/<source>.json`` for a named source), so a lookup is one read whatever the history.
Every write of it is also kept, without the history, as the ``sensor_records`` artifact of the
step that wrote it (``state_record``), so a missing or unreadable state object is rebuilt from
the newest run that recorded the source (baseline, identity, cursor, settling value), with a
message saying so, never treated as "no baseline" silently.

Overlapping runs: every write is a compare-and-swap
---------------------------------------------------
Metaflow's CronWorkflow lets a slow check overlap the next one, and the decision (``start``)
and the publish (``end``) run in different tasks. So every write of the state object names the
version it was computed from (``StateStore.load_versioned()`` -> ``(state, version)``;
``StateStore.save(state, expected_version)``) and fails with ``StateConflict`` if another run
wrote in between:

- S3 datastore: ``PutObject`` with ``IfMatch=<ETag>`` (``IfNoneMatch="*"`` when there is no
  object yet), through boto3 configured as Metaflow's own S3 client (Metaflow's storage layer
  has no conditional write);
- local datastore: a file lock beside the object, the version being a digest of its bytes,
  written by atomic rename;
- other datastores (gs, azure): no conditional write here; the last writer wins and a warning
  says so once per process.

The protocol of one run:

1. ``start`` reads ``(state, version)`` and decides against it. A live *claim* of another run
   (below) means "being announced right now": no event (decision kind ``concurrent``).
2. ``announce_change``, when the decision is to publish, first *claims* the change: a CAS
   write of the same state plus ``claim = {run, change_id, value, expires_at}``, a lease
   longer than the publish can take (``[sensor] publish_timeout`` + 60 s).
3. It publishes, then *commits*: a CAS write moving the baseline, appending the history entry
   and clearing the claim.

A run that loses a CAS re-reads the state and re-decides with its observation: if another run
announced the same value meanwhile, or holds a live claim, it publishes nothing (kind
``concurrent``); if the baseline moved to another value, its own observation may be older, so
it publishes nothing and the next check compares again; a claim whose lease expired (its run
died between claim and commit) is ignored, so the change is published again. A run that has
published retries its commit on the state it re-read, so no history entry is lost. History-only
writes (unchanged and reverted checks, written by ``start``; settling) retry a few times, then
are logged and dropped: they never fail a run, and never make an announcing run fail.

``FLOWPROJECT_TEST_WRITE_BARRIER=<folder>:<n>`` (tests only) makes the n-th state write of a
process create ``<folder>/write-<n>.waiting`` and wait for ``<folder>/write-<n>.go``, so a test
can interleave two runs exactly.
"""

import hashlib
import io
import json
import os
import random
import sys
import threading
import time
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

from .exceptions import StateConflict, StateError, StateFormatError
from .lines import say
from .schema_check import surely_valid
from .sensor import DEFAULT_SOURCE, Baseline, SensorState
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
        # A reset marker (flowproject reset, ./deploy --teardown): see SensorState.reset.
        "reset": {"type": ["object", "null"]},
        # Where the source's next check continues reading (SensorState.cursor).
        "cursor": {"type": ["object", "null"]},
    },
}


def check_state_document(doc):
    """Raise ``StateFormatError`` naming the first field of ``doc`` that has the wrong shape."""
    if surely_valid(doc, STATE_SCHEMA):  # every check reads the state: skip the import
        return
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


# Attempts of a CAS write before giving up (re-reading the state between attempts).
STATE_WRITE_ATTEMPTS = 6
# The claim outlives the longest publish by this much (seconds).
CLAIM_MARGIN = 60
DEFAULT_PUBLISH_TIMEOUT = 60
WRITE_BARRIER_ENV = "FLOWPROJECT_TEST_WRITE_BARRIER"


@dataclass
class Claim:
    """A run announcing a change right now: others publish nothing until ``expires_at``.

    Parameters
    ----------
    run : str
        Pathspec of the announcing run (``SensorFlow/123``).
    change_id : str
        The change being announced.
    value : str or None
        The value being announced (shortened), for logs.
    expires_at : str
        ISO UTC time after which the claim is ignored (its run died before committing).
    """

    run: str
    change_id: str
    value: str | None
    expires_at: str

    def live(self, now=None):
        """Whether the lease still holds at ``now`` (a UTC datetime, now by default)."""
        now = now or datetime.now(timezone.utc)
        try:
            return datetime.fromisoformat(self.expires_at) > now
        except (TypeError, ValueError):
            return False

    def to_dict(self):
        return dict(vars(self))

    @classmethod
    def from_dict(cls, doc):
        """The claim stored in a state document, or None (also for a malformed one)."""
        if not isinstance(doc, dict):
            return None
        try:
            return cls(
                str(doc["run"]), str(doc["change_id"]), doc.get("value"), str(doc["expires_at"])
            )
        except KeyError:
            return None


def claim_lease_seconds(sensor_config):
    """How long a claim holds: ``[sensor] publish_timeout`` (60 s if unset) plus a margin."""
    timeout = None
    if sensor_config is not None and hasattr(sensor_config, "get"):
        timeout = sensor_config.get("publish_timeout", None)
    return (timeout or DEFAULT_PUBLISH_TIMEOUT) + CLAIM_MARGIN


def new_claim(run, change_id, value, lease_seconds, now=None):
    """A ``Claim`` of ``run`` on ``change_id`` that expires ``lease_seconds`` from now."""
    now = now or datetime.now(timezone.utc)
    expires = now + timedelta(seconds=lease_seconds)
    short = value if value is None or len(value) <= 80 else value[:77] + "..."
    return Claim(run, change_id, short, expires.isoformat(timespec="seconds"))


def claim_of_another_run(state, run, now=None):
    """The live claim of a run other than ``run`` in ``state``, or None."""
    claim = getattr(state, "claim", None)
    if claim is not None and claim.run != run and claim.live(now):
        return claim
    return None


_writes_in_process = 0


def _test_write_barrier():
    """Tests only: pause the n-th state write of this process (see the module docstring)."""
    global _writes_in_process
    _writes_in_process += 1
    spec = os.environ.get(WRITE_BARRIER_ENV)
    if not spec:
        return
    folder, _, nth = spec.rpartition(":")
    if not nth.isdigit() or int(nth) != _writes_in_process:
        return
    open(os.path.join(folder, "write-%s.waiting" % nth), "w").close()
    deadline = time.monotonic() + 300
    while not os.path.exists(os.path.join(folder, "write-%s.go" % nth)):
        if time.monotonic() > deadline:
            raise StateError("%s: write %s was never released" % (WRITE_BARRIER_ENV, nth))
        time.sleep(0.05)


class LocalStateObject(object):
    """The state object in the local datastore: a file lock, a content digest as version."""

    def __init__(self, full_path):
        self.full_path = full_path

    @staticmethod
    def version_of(body):
        return "sha256:" + hashlib.sha256(body).hexdigest()

    def read(self):
        """``(bytes, version)``, or ``(None, None)`` when there is no object."""
        try:
            with open(self.full_path, "rb") as f:
                body = f.read()
        except FileNotFoundError:
            return None, None
        return body, self.version_of(body)

    def write(self, body, expected_version):
        from filelock import FileLock

        os.makedirs(os.path.dirname(self.full_path), exist_ok=True)
        with FileLock(self.full_path + ".lock", timeout=60):
            _, current = self.read()
            if current != expected_version:
                raise StateConflict("%s changed since it was read" % self.full_path)
            tmp = "%s.%s.tmp" % (self.full_path, uuid.uuid4().hex[:8])
            with open(tmp, "wb") as f:
                f.write(body)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.full_path)
        return self.version_of(body)


_metaflow_s3_clients = {}
_metaflow_s3_client_lock = threading.Lock()


def metaflow_s3_client():
    """``(client, ClientError)`` with Metaflow's own S3 settings (endpoint, retries, role),
    made once per process and endpoint: each new one parses the S3 service model again
    (about a quarter of a second), which a sensor with 20 sources would pay 20 times a step."""
    from metaflow.plugins.datatools.s3.s3util import get_s3_client

    endpoint = (os.environ.get("AWS_ENDPOINT_URL_S3"), os.environ.get("AWS_ENDPOINT_URL"))
    with _metaflow_s3_client_lock:
        if endpoint not in _metaflow_s3_clients:
            _metaflow_s3_clients[endpoint] = get_s3_client()
        return _metaflow_s3_clients[endpoint]


class S3StateObject(object):
    """The state object in S3: conditional PutObject, the ETag as version."""

    def __init__(self, url):
        bucket_and_key = url[len("s3://") :]
        self.bucket, _, self.key = bucket_and_key.partition("/")
        self.client, self.client_error = metaflow_s3_client()

    def read(self):
        try:
            answer = self.client.get_object(Bucket=self.bucket, Key=self.key)
        except self.client_error as e:
            if e.response.get("Error", {}).get("Code") in ("NoSuchKey", "404"):
                return None, None
            raise
        return answer["Body"].read(), answer["ETag"]

    def write(self, body, expected_version):
        from metaflow.metaflow_config import S3_SERVER_SIDE_ENCRYPTION

        condition = (
            {"IfNoneMatch": "*"} if expected_version is None else {"IfMatch": expected_version}
        )
        if S3_SERVER_SIDE_ENCRYPTION:
            # As Metaflow's own S3 writes (METAFLOW_S3_SERVER_SIDE_ENCRYPTION).
            condition["ServerSideEncryption"] = S3_SERVER_SIDE_ENCRYPTION
        try:
            answer = self.client.put_object(
                Bucket=self.bucket,
                Key=self.key,
                Body=body,
                ContentType="application/json",
                **condition,
            )
        except self.client_error as e:
            error = e.response.get("Error", {})
            status = e.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
            if error.get("Code") in ("PreconditionFailed", "ConditionalRequestConflict") or (
                status in (409, 412)
            ):
                raise StateConflict(
                    "s3://%s/%s changed since it was read" % (self.bucket, self.key)
                ) from None
            raise
        return answer["ETag"]


class UnconditionalStateObject(object):
    """Any other datastore: Metaflow's storage layer, last writer wins (said once)."""

    warned = False

    def __init__(self, storage, path):
        self.storage, self.path = storage, path

    def read(self):
        with self.storage.load_bytes([self.path]) as loaded:
            for _key, local_path, _meta in loaded:
                if local_path is None:
                    return None, None
                with open(local_path, "rb") as f:
                    return f.read(), None
        return None, None

    def write(self, body, expected_version):
        if not UnconditionalStateObject.warned:
            UnconditionalStateObject.warned = True
            say(
                "Sensor state: the %s datastore has no conditional write here, so overlapping "
                "runs of one branch may publish a change twice (last writer wins)"
                % getattr(self.storage, "TYPE", "current"),
                sys.stderr,
            )
        self.storage.save_bytes([(self.path, io.BytesIO(body))], overwrite=True)
        return None


def state_object(storage, path):
    """The state object at ``path`` of ``storage``, with the conditional write it supports."""
    kind = getattr(storage, "TYPE", None)
    if kind == "local":
        return LocalStateObject(storage.full_uri(path))
    if kind == "s3":
        return S3StateObject(storage.full_uri(path))
    return UnconditionalStateObject(storage, path)


def list_folder(storage, folder, page_size=1000):
    """``[(name, is_file)]`` one level below ``folder`` (relative to the datastore root), sorted.

    On S3 one ``ListObjectsV2`` call per page, with the client the state objects use: Metaflow's
    own listing starts a helper process per call (about 0.7 s), and ``find_states`` lists a
    folder per flow, project and branch. Elsewhere Metaflow's ``list_content``. A folder that
    does not exist is empty; a page that is not a well-formed answer raises ``ValueError``.
    """
    if getattr(storage, "TYPE", None) == "s3":
        from .sources.s3 import page_problem

        bucket, _, prefix = storage.full_uri(folder)[len("s3://") :].partition("/")
        prefix = prefix.rstrip("/") + "/" if prefix.strip("/") else ""
        client, _ = metaflow_s3_client()
        found = []
        for page in client.get_paginator("list_objects_v2").paginate(
            Bucket=bucket, Prefix=prefix, Delimiter="/", PaginationConfig={"PageSize": page_size}
        ):
            # A page not understood (an empty or cut 200 from a proxy) must not pass for the
            # end of the listing: the folder would look emptier than it is.
            problem = page_problem(page, delimiter="/")
            if problem:
                raise ValueError("the store answered with %s" % problem)
            found += [
                (p["Prefix"][len(prefix) :].rstrip("/"), False)
                for p in page.get("CommonPrefixes", ())
            ]
            found += [(o["Key"][len(prefix) :], True) for o in page.get("Contents", ())]
        return sorted(entry for entry in found if entry[0])
    return sorted(
        (e.path.rstrip("/").split("/")[-1], e.is_file) for e in storage.list_content([folder])
    )


def _recovery_text(state):
    """What a recovery from past runs found, for the log."""
    baseline, found = state.baseline, state.recovered_from
    if baseline is not None:
        announced_by = baseline.run or found
        text = "recovered the baseline from run %s" % announced_by
        if found and found != announced_by:
            text += " (the state as run %s recorded it, cursor included)" % found
        return text
    if found:
        return (
            "recovered the state run %s recorded (no value announced yet), so this is a "
            "first check" % found
        )
    return "no earlier run of this branch announced a value, so this is the first check"


def state_path(flow_name, project, branch, source=DEFAULT_SOURCE):
    """Key of a branch's state object for one source, relative to the datastore root.

    The single-source form's (``source="default"``) is ``<branch>.json``, where it has always
    been; a named source's is ``<branch>/<source>.json`` beside it.
    """
    safe_branch = branch.replace("/", "_")
    if source == DEFAULT_SOURCE:
        return "%s/sensor_state/%s/%s.json" % (flow_name, project or "_", safe_branch)
    return "%s/sensor_state/%s/%s/%s.json" % (flow_name, project or "_", safe_branch, source)


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
        # Where this run reads and writes its state, absolute: once per task (issue 20 #4).
        where = storage.full_uri("%s/sensor_state" % type(flow).__name__)
        if getattr(storage, "TYPE", None) == "local":
            where = os.path.abspath(where)
        said = datastore_storage.__dict__.setdefault("said", set())
        if where not in said:
            said.add(where)
            say("Sensor state: %s" % where)
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
    source : str
        Which source of the sensor (``"default"`` for the single-source form's ``[data]``).
    identity : dict, optional
        The source's identity. A named source without a state object yet carries over the
        single-source form's baseline when that was of this same identity (a ``[data]``
        table turned into a ``[sources.<name>]`` table announces nothing anew).
    """

    def __init__(self, storage, flow_name, project, branch, source=DEFAULT_SOURCE, identity=None):
        self.storage = storage
        self.flow_name, self.project, self.branch = flow_name, project, branch
        self.source, self.identity = source, identity
        self.path = state_path(flow_name, project, branch, source)
        self.object = state_object(storage, self.path)

    def _carried_over(self, quiet):
        """The single-source form's state, if it is of this named source's identity."""
        if self.source == DEFAULT_SOURCE or self.identity is None:
            return None
        legacy = StateStore(self.storage, self.flow_name, self.project, self.branch)
        try:
            doc, _version = legacy.read_versioned()
            if doc is None:
                return None
            check_state_document(doc)
        except Exception:
            return None
        state = SensorState.from_dict(doc)
        if state.identity is None or dict(state.identity) != dict(self.identity):
            return None
        if state.scope is not None:
            state.scope = dict(state.scope, source=self.source)
        if not quiet:
            say(
                "Sensor state: source %r carries over the baseline of %s (same source: %s)"
                % (
                    self.source,
                    legacy.path,
                    ", ".join("%s=%r" % kv for kv in self.identity.items()),
                ),
                sys.stderr,
            )
        return state

    def read_raw(self):
        """The stored JSON document, or None when there is none. Raises on unreadable data."""
        return self.read_versioned()[0]

    def read_versioned(self):
        """``(document, version)``; ``(None, None)`` when there is no object.

        Raises on an unreadable document, with ``.version`` set on the exception so the object
        can still be replaced by a CAS write.
        """
        body, version = self.object.read()
        if body is None:
            return None, None
        try:
            return json.loads(body.decode("utf-8")), version
        except Exception as e:
            e.version = version
            raise

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
            from the state object); ``claim`` is the live or expired ``Claim``, if any.
        """
        return self.load_versioned(quiet=quiet, baseline_run=baseline_run)[0]

    def load_versioned(self, quiet=False, baseline_run=None):
        """The branch's state and the version to pass to ``save()``.

        Parameters are those of ``load()``.

        Returns
        -------
        tuple
            ``(SensorState, version)``: the version is the S3 ETag or the local object's
            digest, None when there is no object (and on datastores without conditional
            writes).
        """
        version = None
        try:
            doc, version = self.read_versioned()
            if doc is not None:
                check_state_document(doc)
                state = SensorState.from_dict(doc)
                state.claim = Claim.from_dict(doc.get("claim"))
                if state.reset is not None and state.baseline is None and not quiet:
                    # The marker stands in for the runs before it: nothing is recovered.
                    say(
                        "Sensor state: reset at %s by %s; this is a first check"
                        % (state.reset.get("at"), state.reset.get("by")),
                        sys.stderr,
                    )
                return state, version
            carried = self._carried_over(quiet)
            if carried is not None:
                return carried, None
            why = "no state object at %s" % self.path
        except StateFormatError as e:
            why = "state object at %s is unreadable (wrong shape, %s)" % (self.path, e)
        except Exception as e:  # unreadable: corrupt JSON, wrong shape, storage error
            version = getattr(e, "version", version)
            why = "state object at %s is unreadable (%s)" % (self.path, e.__class__.__name__)
        if baseline_run is not None:
            named = () if self.source == DEFAULT_SOURCE else (self.source,)
            state = recover_from_run(baseline_run, *named)
        elif quiet:
            state = SensorState()
        else:
            named = () if self.source == DEFAULT_SOURCE else (self.source,)
            state = recover_from_runs(self.flow_name, self.project, self.branch, *named)
        if not quiet:
            say("Sensor state: %s; %s" % (why, _recovery_text(state)), sys.stderr)
        return state, version

    def save(self, state, expected_version, claim=None):
        """Write the branch's state if nobody wrote it since ``expected_version`` was read.

        Parameters
        ----------
        state : SensorState
        expected_version : str or None
            From ``load_versioned()``; None when there was no object.
        claim : Claim, optional
            Stored with the state (a run announcing a change); a write without it clears it.

        Returns
        -------
        str or None
            The new version.

        Raises
        ------
        StateConflict
            Another run wrote the state in between: re-read, re-decide, retry.
        """
        doc = state.to_dict()
        if claim is not None:
            doc["claim"] = claim.to_dict()
        body = json.dumps(doc, sort_keys=True, separators=(",", ":")).encode("utf-8")
        _test_write_barrier()
        try:
            return self.object.write(body, expected_version)
        except StateConflict:
            raise
        except Exception as e:
            raise StateError(
                "Could not write the sensor state to %s: %s" % (self.path, e)
            ) from None

    def update(self, change, state, version, attempts=STATE_WRITE_ATTEMPTS, baseline_run=None):
        """Apply ``change`` to the state and write it, re-reading and retrying on conflicts.

        Parameters
        ----------
        change : callable
            ``change(state) -> (new_state, claim)``; called again on the re-read state after
            each lost compare-and-swap.
        state, version
            What the caller read (``load_versioned()``).
        attempts : int
            Writes to try before the last ``StateConflict`` is raised.
        baseline_run : str, optional
            As in ``load()``, for re-reads when the object is missing.

        Returns
        -------
        tuple
            ``(new_state, new_version)`` as written.
        """
        for attempt in range(attempts):
            new_state, claim = change(state)
            try:
                return new_state, self.save(new_state, version, claim)
            except StateConflict:
                if attempt + 1 == attempts:
                    raise
            # Another run wrote: a short random pause spreads the retries of overlapping runs.
            time.sleep(random.uniform(0.05, 0.3) * (attempt + 1))
            state, version = self.load_versioned(quiet=True, baseline_run=baseline_run)


# The artifact of every step that wrote a source's state: ``{source: state_record(...)}``.
RECORDS_ARTIFACT = "sensor_records"


def state_record(state, run):
    """What a source's next check depends on, as the step that wrote it keeps it.

    The state document without its history (baseline, identity, cursor, settling value,
    scope), with when and by which run it was written. A lost state object is rebuilt from
    the newest of these (``recover_from_runs``).

    Parameters
    ----------
    state : SensorState
        The state as written.
    run : str
        Pathspec of the writing run.
    """
    doc = state.to_dict()
    doc["history"] = []
    doc.pop("reset", None)
    doc["written_at"] = datetime.now(timezone.utc).isoformat(timespec="microseconds")
    doc["written_by"] = run
    return doc


def _recorded_state(run, source):
    """The newest state any step of ``run`` recorded for ``source``, or None."""
    newest = None
    for step in run:
        task = step.task
        if task is None or RECORDS_ARTIFACT not in task:
            continue
        record = (task[RECORDS_ARTIFACT].data or {}).get(source)
        if not isinstance(record, dict):
            continue
        if newest is None or str(record.get("written_at")) > str(newest.get("written_at")):
            newest = record
    if newest is None:
        return None
    doc = {k: v for k, v in newest.items() if k not in ("written_at", "written_by")}
    try:
        check_state_document(doc)
    except StateFormatError:
        return None
    state = SensorState.from_dict(doc)
    state.recovered_from = run.pathspec
    return state


def _announced_in_end(run, source):
    """The baseline a run made before ``sensor_records`` existed kept in ``end``, or None.

    The single-source form's run kept ``announced``, ``announced_value``, ``change_id`` and
    ``announced_identity``; a multi-source run ``announcements``:
    ``{source: {"value", "change_id", "identity"}}``.
    """
    end = run["end"].task
    if end is None or not end.successful:
        return None
    if "announcements" in end:
        announced = (end["announcements"].data or {}).get(source)
    elif source == DEFAULT_SOURCE and "announced" in end and end["announced"].data:
        announced = {
            "value": end["announced_value"].data,
            "change_id": end["change_id"].data,
            "identity": end["announced_identity"].data if "announced_identity" in end else None,
        }
    else:
        announced = None
    if not announced:
        return None
    value = announced["value"]
    return SensorState(
        baseline=Baseline(
            value=value,
            fingerprint=fingerprint(value),
            change_id=announced["change_id"],
            run=run.pathspec,
            announced_at=str(end.finished_at),
        ),
        recovered_from=run.pathspec,
        # Runs from before identities were recorded have none: the current one is adopted.
        identity=announced.get("identity"),
    )


def _baseline_of(run, source=DEFAULT_SOURCE):
    """The state ``run`` (a Metaflow client Run) recorded for ``source``, or None.

    Any step's ``sensor_records`` (the newest of them), whether or not the run's other
    sources or its ``end`` failed; for runs made before those were kept, what ``end`` kept.
    """
    from metaflow.exception import MetaflowNotFound

    try:
        return _recorded_state(run, source) or _announced_in_end(run, source)
    except (KeyError, MetaflowNotFound):
        return None


def recover_from_run(pathspec, source=DEFAULT_SOURCE):
    """The state recorded by one known run (one lookup, whatever the history)."""
    from metaflow import Run, namespace
    from metaflow.exception import MetaflowNotFound

    namespace(None)
    try:
        return _baseline_of(Run(pathspec), source) or SensorState()
    except MetaflowNotFound:
        return SensorState()


def recover_from_runs(flow_name, project, branch, source=DEFAULT_SOURCE):
    """Rebuild ``source``'s state from the newest run of ``branch`` that recorded it.

    Baseline, identity, cursor and settling value come back as the run's step wrote them;
    the history does not (it lives only in the state object). This walks past runs with the
    Metaflow client, newest first, so it is used only when the state object is missing or
    unreadable; the newest run almost always recorded the source (every check that reads
    the source writes its state).
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
        state = _baseline_of(run, source)
        if state is not None:
            return state
    return SensorState()


def load_listing(run_pathspec, step="start", source=DEFAULT_SOURCE):
    """The gzip'd listing stored by the run that announced ``source``'s baseline, or None.

    One run lookup with the Metaflow client (no walk over the history). The run keeps it as
    ``listings[source]`` (older single-source runs as ``listing``).
    """
    from metaflow import Step, namespace
    from metaflow.exception import MetaflowNotFound

    if not run_pathspec:
        return None
    namespace(None)
    try:
        task = Step("%s/%s" % (run_pathspec, step)).task
        if task is None:
            return None
        if "listings" in task:
            return (task["listings"].data or {}).get(source)
        # Runs of the single-source form made before listings were kept per source.
        if source == DEFAULT_SOURCE and "listing" in task:
            return task["listing"].data
        return None
    except MetaflowNotFound:
        return None
