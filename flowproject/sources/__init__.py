"""Data sources a sensor can watch, one module each, all with the same small interface.

A source module defines:

- ``TYPE``: the value of ``[data] type`` that selects it;
- ``PACKAGES``: ``{distribution: version range}`` a check imports (given to the step under
  ``--environment=pypi`` / ``conda`` by ``@source``; imported lazily, inside ``check``);
- ``CONFIG_SCHEMA``: a JSON schema for its ``[data]`` table;
- ``validate(data) -> list[str]``: checks a schema cannot express, one message per problem;
- ``normalize(data) -> dict``: the validated table with defaults and resolved values;
- ``describe(data) -> str``: what is watched, for logs and cards (never a secret);
- ``open_session(data) -> Session``: a context manager holding the client or connection;
- ``check(data, session, cursor=None) -> Observation``: the source's state now, as one
  comparable value. ``cursor`` is what the previous check left in ``Observation.cursor``
  (None on a first check, after a reset, or when the source's identity changed): a source
  that reads a log (Delta's ``_delta_log/``) continues from it instead of reading it all.
  The state keeps the newest cursor whether or not the value was announced. A source that
  uses it sets ``USES_CURSOR = True`` (the flow then reads the state before checking) and
  takes ``check(data, session, cursor=None, baseline=None)``: ``baseline`` is the value last
  announced (None if none). A cursor is a hint: losing it may cost reads, never change the
  value. When the source cannot tell the value without it (an expired snapshot, a cleaned-up
  log), it compares with ``baseline`` itself, or sets ``summary["cannot_tell"]`` to the reason
  (the decision then follows ``on_first_check`` and says why). ``session.deadline`` (a
  ``time.monotonic()`` instant, or None) is when the check's time is up: a source reading a
  long log stops before it and raises ``exceptions.SourceIncomplete(msg, cursor)`` with the
  progress made, which is kept (no event) so the next check continues from there;
- ``identity(data) -> dict``: what the value depends on (a baseline of another identity is
  not compared with); JSON-serialisable, never a secret;
- ``absent_message(data) -> str``: what the absent state means, for people.

Modules are imported only when their type is configured, so the S3 path never imports the
Snowflake connector and the other way round. Adding a source is one module plus one line below.
"""

import dataclasses
import importlib
import os

from ..sensor import DEFAULT_SOURCE, baseline_mismatch
from .observation import ABSENT_STATE, Observation, fingerprint

SOURCE_TYPES = {
    "s3": "flowproject.sources.s3",
    "snowflake": "flowproject.sources.snowflake",
    "delta": "flowproject.sources.delta",
    "iceberg": "flowproject.sources.iceberg",
}


def load_source(source_type):
    """Import and return the module implementing ``source_type`` (a key of ``SOURCE_TYPES``)."""
    return importlib.import_module(SOURCE_TYPES[source_type])


def source_identity(data):
    """The identity of the source ``data`` (a normalized ``[data]`` table) configures."""
    return load_source(data["type"]).identity(data)


def source_absent_message(data):
    """What it means that the source ``data`` configures is absent, e.g. ``no objects under
    s3://my-ml-data/evnets/``."""
    return load_source(data["type"]).absent_message(data)


def watched_source(data, project, source=DEFAULT_SOURCE):
    """What a baseline of the source ``data`` is of, as ``sensor.decide`` keyword arguments.

    The flow, ``check_once`` and ``flowproject reset --to-current`` all decide with these, so
    they agree on identities and on what "absent" means.

    Parameters
    ----------
    data : dict
        The normalized ``[data]`` table (or a ``[sources.<name>]`` table's source keys).
    project : str or None
        The ``@project`` name.
    source : str
        The source's name: ``"default"`` for ``[data]``, else ``<name>`` of
        ``[sources.<name>]``. Part of its change ids and of its state's scope.
    """
    return {
        "project": project,
        "source": source,
        "identity": source_identity(data),
        "absent_message": source_absent_message(data),
    }


def describe_source(data):
    """What the source ``data`` configures watches, for logs and cards (never a secret)."""
    return load_source(data["type"]).describe(data)


def failure_text(error):
    """One line saying why a source's check failed: a flowproject error's own message, else
    the exception's class and message."""
    from ..exceptions import FlowprojectException

    if isinstance(error, FlowprojectException):
        return str(getattr(error, "message", error)).strip()
    text = str(error).strip()
    return "%s: %s" % (error.__class__.__name__, text) if text else error.__class__.__name__


def observe(data, state, identity, scope, deadline=None):
    """Check the source ``data`` configures once, with the hints ``state`` holds.

    The one way a source is checked (by a flow, ``testing.check_once`` and
    ``check_source``): the cursor of a state of the same identity, and for a cursor source
    the announced value, are passed to the source's ``check``.

    Parameters
    ----------
    data : dict
        The normalized source table.
    state : SensorState
        The state the decision will be made against.
    identity, scope : dict
        The source's identity and the check's scope (a state of another is not a hint).
    deadline : float, optional
        ``time.monotonic()`` instant the check's time is up (``session.deadline``).

    Returns
    -------
    tuple
        ``(Observation, requests)``: ``requests`` is what the check asked the source.

    Raises
    ------
    SourceIncomplete
        The source ran out of time part-way; its ``cursor`` is the progress made.
    """
    module = load_source(data["type"])
    with module.open_session(data) as session:
        session.deadline = deadline
        if getattr(module, "USES_CURSOR", False):
            hint = baseline_mismatch(state, scope, identity) is None
            cursor = state.cursor_for(identity) if hint else None
            baseline = state.baseline.value if hint and state.baseline is not None else None
            observation = module.check(data, session, cursor, baseline=baseline)
        else:
            observation = module.check(data, session, None)
        return observation, shown_requests(getattr(session, "requests", []))


# Requests of one check kept one by one (the ``checks`` artifact); past that, counted by kind.
REQUESTS_SHOWN = 100


def shown_requests(requests, limit=REQUESTS_SHOWN):
    """The first ``limit`` requests of a check as recorded, then one entry per kind of request
    for the rest (``{"request", "count", "seconds"}``): a Delta backlog of 10,000 commits makes
    10,000 GETs, which an artifact need not list one by one."""
    requests = list(requests)
    if len(requests) <= limit:
        return requests
    rest = {}
    for entry in requests[limit:]:
        kind = rest.setdefault(entry.get("request"), {"count": 0, "seconds": 0.0})
        kind["count"] += 1
        kind["seconds"] += entry.get("seconds") or 0.0
    return requests[:limit] + [
        {"request": kind, "count": seen["count"], "seconds": round(seen["seconds"], 4)}
        for kind, seen in rest.items()
    ]


def check_source(data):
    """Check the source ``data`` configures once from scratch, outside a flow step (the
    CLI's ``reset --to-current``): no cursor, no baseline.

    A listing spool (``files_metadata``) is deleted: outside a flow nothing keeps it.

    Parameters
    ----------
    data : dict
        The normalized ``[data]`` table.

    Returns
    -------
    Observation
        With ``detail`` None.
    """
    from ..sensor import SensorState

    observation, _requests = observe(data, SensorState(), None, None)
    return drop_detail(observation)


def drop_detail(observation):
    """``observation`` without its ``detail``, the listing spool file deleted if any."""
    if isinstance(observation.detail, str) and os.path.exists(observation.detail):
        os.unlink(observation.detail)
    return dataclasses.replace(observation, detail=None)


__all__ = [
    "ABSENT_STATE",
    "Observation",
    "SOURCE_TYPES",
    "check_source",
    "drop_detail",
    "describe_source",
    "failure_text",
    "fingerprint",
    "load_source",
    "observe",
    "source_absent_message",
    "source_identity",
    "watched_source",
]
