"""User-facing errors: each a ``MetaflowException`` with a one-line headline."""

import os

from metaflow.exception import MetaflowException

# Metaflow's console treats every '*' as a highlight toggle and drops it (there is no escape),
# which would turn the cron '*/5 * * * *' into '/5    '. Messages show U+2217 instead.
_SHOWN_ASTERISK = "\u2217"


class FlowprojectException(MetaflowException):
    """Base of flowproject's user errors: a headline and a message Metaflow prints intact."""

    def __init__(self, msg="", lineno=None):
        super().__init__(str(msg).replace("*", _SHOWN_ASTERISK), lineno)


class FlowConfigError(FlowprojectException):
    """A ``flowconfig.toml`` is invalid; the message lists every problem, one per line.

    The headline names the file that was read (``Invalid bad1.toml``, or ``Invalid bad1.toml
    (configs/bad1.toml)`` for a path), so an error about a file given with ``--config`` is not
    mistaken for one about ``./flowconfig.toml``.

    Parameters
    ----------
    problems : iterable of str
        One line per problem.
    path : str, optional
        The file read, as the user named it; ``flowconfig.toml`` when not known.
    """

    headline = "Invalid flowconfig.toml"

    def __init__(self, problems, path=None):
        self.problems = list(problems)
        self.path = path
        if path:
            name = os.path.basename(path)
            self.headline = "Invalid %s" % (name if name == path else "%s (%s)" % (name, path))
        super().__init__("\n".join(self.problems))


class SourceError(FlowprojectException):
    """The data source could not be checked (missing bucket, access denied, SQL error...)."""

    headline = "Data source check failed"


class SourceIncomplete(SourceError):
    """A check ran out of time part-way through a long read (a Delta log backlog).

    ``cursor`` is the progress made, committed as cursor-only state (no event, baseline
    kept), so the next check continues from there and any backlog clears in a bounded number
    of checks.

    Parameters
    ----------
    msg : str
        What was read and what is left, for people.
    cursor : dict
        The source's cursor after the part that was read.
    """

    headline = "Data source check incomplete"

    def __init__(self, msg="", cursor=None):
        super().__init__(msg)
        self.cursor = cursor


class PublishError(FlowprojectException):
    """The event could not be published; the baseline was not moved."""

    headline = "Event not published"


class StateError(FlowprojectException):
    """The sensor's stored state could not be read or written."""

    headline = "Sensor state unavailable"


class StateFormatError(StateError):
    """The stored state object is not a sensor state (fields missing or of the wrong type)."""

    headline = "Sensor state unreadable"


class StateConflict(StateError):
    """Another run wrote the sensor state since this run read it (a lost compare-and-swap)."""

    headline = "Sensor state changed by another run"


class DevLoopError(FlowprojectException):
    """``flowproject dev`` cannot start: an unreadable config, a flow whose triggers fail."""

    headline = "flowproject dev cannot start"


class ReplayError(FlowprojectException):
    """``flowproject replay`` found no announced event to re-publish."""

    headline = "Nothing to replay"


class SourcesFailed(FlowprojectException):
    """Sources of a multi-source sensor whose check or event failed (the others went on)."""

    headline = "Sources failed"
