"""User-facing errors: each a ``MetaflowException`` with a one-line headline."""

from metaflow.exception import MetaflowException


class FlowConfigError(MetaflowException):
    """``flowconfig.toml`` is invalid; the message lists every problem, one per line."""

    headline = "Invalid flowconfig.toml"

    def __init__(self, problems):
        self.problems = list(problems)
        super().__init__("\n".join(self.problems))


class SourceError(MetaflowException):
    """The data source could not be checked (missing bucket, access denied, SQL error...)."""

    headline = "Data source check failed"


class PublishError(MetaflowException):
    """The event could not be published; the baseline was not moved."""

    headline = "Event not published"


class StateError(MetaflowException):
    """The sensor's stored state could not be read or written."""

    headline = "Sensor state unavailable"
