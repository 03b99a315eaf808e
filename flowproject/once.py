"""Each change processed once by a triggered flow: one marker object per change.

Argo Events delivers at least once, and an event can be delivered again (a retried webhook,
``flowproject replay``). A flow started with ``@sensor_trigger`` claims the change it was
started for before its own code runs, in the same storage as the sensor state
(``state.datastore_storage``):

    <datastore root>/<Flow>/sensor_processed/<project>/<branch>/<change key>.json

``{"change_id", "run", "status": "claimed" | "done", "claimed_at", "expires_at", "done_at"}``.
Deciding is one read (and one create-if-absent write), whatever the number of past runs.

- No marker: the run creates it (``status = claimed``) with a compare-and-swap write that
  succeeds only if the object still does not exist (``state.LocalStateObject`` /
  ``state.S3StateObject`` with ``expected_version=None``), so of two deliveries at once
  exactly one proceeds; the other is a duplicate.
- ``done``: a run reached ``end`` with this change: a duplicate, said and skipped, if it is
  the same announcement. A value that comes back (A, B, A) is announced with A's
  ``change_id`` again, and must be processed again: so a marker also keeps the announcement's
  ``changes_url`` (a content-addressed manifest: the same for a delivery of the same event,
  another for A announced after B, whose changes differ). Without manifests (Snowflake), the
  change this flow processed last in the branch decides (``<branch>.last.json`` beside the
  markers, written with each ``done``): if it is another one, A is processed again.
- ``claimed`` by a live run: a duplicate (that run is processing the change).
- ``claimed`` and the lease expired (its run died before ``end``): the run takes it over with
  a compare-and-swap write on the version it read.

A run reaching ``end`` marks the change ``done``. A run started by hand (no change id) is
never a duplicate and writes nothing.
"""

import hashlib
import json
import re
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

from .exceptions import StateConflict, StateError
from .state import STATE_WRITE_ATTEMPTS, state_object

# How long a claim holds when its run does not reach ``end`` (died, killed, failed).
DEFAULT_LEASE_SECONDS = 3600

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")


def change_key(change_ids):
    """The marker name of a run's change(s), or None for a run without a change id.

    Parameters
    ----------
    change_ids : dict
        ``{source: change_id}``; empty ids (a run started by hand) are left out.
    """
    present = {name: cid for name, cid in change_ids.items() if cid}
    if not present:
        return None
    if len(present) == 1:
        (cid,) = present.values()
        return _UNSAFE.sub("_", cid)[:128]
    text = json.dumps(present, sort_keys=True, separators=(",", ":"))
    return "multi-" + hashlib.sha256(text.encode("utf-8")).hexdigest()[:32]


def marker_path(flow_name, project, branch, key):
    """Key of a change's marker object, relative to the datastore root."""
    return "%s/sensor_processed/%s/%s/%s.json" % (
        flow_name,
        project or "_",
        branch.replace("/", "_"),
        key,
    )


def last_path(flow_name, project, branch):
    """Key of the object naming the change a flow processed last in a branch."""
    return "%s/sensor_processed/%s/%s.last.json" % (
        flow_name,
        project or "_",
        branch.replace("/", "_"),
    )


def _now():
    return datetime.now(timezone.utc)


def _stamp(when):
    return when.isoformat(timespec="seconds")


@dataclass
class Verdict:
    """Whether a triggered run processes its change.

    Parameters
    ----------
    proceed : bool
        True: this run holds the claim and does the work.
    reason : str
        One line for the log: why.
    holder : str or None
        The run that processed (or is processing) the change, for a duplicate.
    """

    proceed: bool
    reason: str
    holder: str | None = None


class ProcessedOnce(object):
    """The processed-once marker of one change of one flow in one ``@project`` branch.

    Parameters
    ----------
    storage : DataStoreStorage
        Where markers live (``state.datastore_storage``).
    flow_name, project, branch : str
        The triggered flow, its ``@project`` and branch.
    change_ids : dict
        ``{source: change_id}`` of the event(s) the run was started for.
    announcement : dict, optional
        ``{source: changes_url}`` of the event(s): tells a delivery of the same announcement
        from the same value announced again later.
    """

    def __init__(self, storage, flow_name, project, branch, change_ids, announcement=None):
        self.change_ids = {k: v for k, v in change_ids.items() if v}
        self.announcement = {k: v for k, v in (announcement or {}).items() if v}
        self.key = change_key(change_ids)
        self.path = None if self.key is None else marker_path(flow_name, project, branch, self.key)
        self.object = None if self.path is None else state_object(storage, self.path)
        self.last = state_object(storage, last_path(flow_name, project, branch))

    def _read(self, obj=None):
        body, version = (obj or self.object).read()
        if body is None:
            return None, None
        try:
            doc = json.loads(body.decode("utf-8"))
        except ValueError:
            doc = {}
        return (doc if isinstance(doc, dict) else {}), version

    def _write(self, doc, version, obj=None):
        body = json.dumps(doc, sort_keys=True, separators=(",", ":")).encode("utf-8")
        return (obj or self.object).write(body, version)

    def came_back(self, done):
        """Whether the change a ``done`` marker records is announced anew (A, B, A)."""
        recorded = done.get("announcement") or {}
        if recorded and self.announcement:
            return recorded != self.announcement
        return self.processed_last() not in (None, self.key)

    def processed_last(self):
        """The change key this flow processed last in the branch, or None."""
        doc, _version = self._read(self.last)
        return None if doc is None else doc.get("key")

    def claim(self, run, lease_seconds=DEFAULT_LEASE_SECONDS, also_mine=(), now=None):
        """Claim the change for ``run``, unless it was processed or is being processed.

        Parameters
        ----------
        run : str
            This run's pathspec (``StarterFlow/12``).
        lease_seconds : float
            How long the claim holds if the run never reaches ``end``.
        also_mine : iterable of str
            Pathspecs whose claim this run continues (the run a ``resume`` started from).
        now : datetime, optional
            For tests.

        Returns
        -------
        Verdict
        """
        if self.object is None:
            return Verdict(True, "no change id (a run started by hand): nothing to de-duplicate")
        mine = {run, *also_mine}
        changes = ", ".join("%s %s" % kv for kv in sorted(self.change_ids.items()))
        for _attempt in range(STATE_WRITE_ATTEMPTS):
            now_ = now or _now()
            doc, version = self._read()
            came_back = None
            if doc is not None:
                holder, status = doc.get("run"), doc.get("status")
                if status == "done" and self.came_back(doc):
                    came_back = doc  # A, B, A: processed before B, so A is new again
                elif status == "done":
                    return Verdict(
                        False,
                        "change %s was already processed by %s (finished %s): this run does "
                        "nothing" % (self.describe(), holder, doc.get("done_at")),
                        holder,
                    )
                expires = _parse(doc.get("expires_at"))
                live = expires is not None and expires > now_
                if came_back is None and holder not in mine and live:
                    return Verdict(
                        False,
                        "change %s is being processed by %s (claimed until %s): this run "
                        "does nothing" % (self.describe(), holder, doc.get("expires_at")),
                        holder,
                    )
            new = {
                "change_id": self.change_ids,
                "announcement": self.announcement,
                "run": run,
                "status": "claimed",
                "claimed_at": _stamp(now_),
                "expires_at": _stamp(now_ + timedelta(seconds=lease_seconds)),
            }
            try:
                self._write(new, version)
            except StateConflict:
                continue  # another delivery wrote first: read what it wrote
            except Exception as e:
                raise StateError(
                    "Could not claim change %s at %s: %s" % (changes, self.path, e)
                ) from None
            if doc is None:
                return Verdict(True, "change %s claimed by %s" % (self.describe(), run))
            if came_back is not None:
                return Verdict(
                    True,
                    "change %s claimed by %s: %s processed it at %s, but another change was "
                    "processed since (the data came back to this value)"
                    % (self.describe(), run, doc.get("run"), doc.get("done_at")),
                )
            return Verdict(
                True,
                "change %s claimed by %s (taking over the claim of %s, which expired at %s)"
                % (self.describe(), run, doc.get("run"), doc.get("expires_at")),
            )
        raise StateError(
            "Could not claim change %s at %s: the marker kept changing (%d attempts)"
            % (changes, self.path, STATE_WRITE_ATTEMPTS)
        )

    def mark_done(self, run, also_mine=(), now=None):
        """Record that ``run`` processed the change (it reached ``end``).

        Only the run holding the claim writes (``also_mine`` as for ``claim``): a duplicate
        reaching ``end`` leaves the marker as it is.

        Returns
        -------
        bool
            Whether the marker now says ``done`` by this run.
        """
        if self.object is None:
            return False
        for _attempt in range(STATE_WRITE_ATTEMPTS):
            doc, version = self._read()
            if doc is None or doc.get("run") not in {run, *also_mine}:
                return False
            done = dict(doc, status="done", run=run, done_at=_stamp(now or _now()))
            done.pop("expires_at", None)
            try:
                self._write(done, version)
            except StateConflict:
                continue
            self._set_last(run, done["done_at"])
            return True
        raise StateError(
            "Could not mark change %s done at %s (%d attempts)"
            % (self.describe(), self.path, STATE_WRITE_ATTEMPTS)
        )

    def _set_last(self, run, when):
        """Name this change as the one processed last (the latest write wins)."""
        doc = {"key": self.key, "change_id": self.change_ids, "run": run, "done_at": when}
        for _attempt in range(STATE_WRITE_ATTEMPTS):
            _old, version = self._read(self.last)
            try:
                self._write(doc, version, self.last)
                return
            except StateConflict:
                continue

    def describe(self):
        if len(self.change_ids) == 1:
            return next(iter(self.change_ids.values()))
        return "(%s)" % ", ".join("%s %s" % kv for kv in sorted(self.change_ids.items()))


def _parse(text):
    try:
        return datetime.fromisoformat(text)
    except (TypeError, ValueError):
        return None


__all__ = [
    "DEFAULT_LEASE_SECONDS",
    "ProcessedOnce",
    "Verdict",
    "change_key",
    "last_path",
    "marker_path",
]
