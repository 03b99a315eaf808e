"""flowproject: a Metaflow flow template for event-driven ML pipelines.

A cron-scheduled ``SensorFlow`` checks an S3 prefix or a Snowflake query, compares what it sees
with what it last announced, and publishes an Argo Event when the data changed.
"""

from .baseflow import BaseFlow
from .config import load_flowconfig, parse_flowconfig
from .decorators import announcement, s3, snowflake, source
from .devloop import DevLoop
from .exceptions import (
    DevLoopError,
    FlowConfigError,
    PublishError,
    ReplayError,
    SourceError,
    StateConflict,
    StateError,
    StateFormatError,
)
from .operations import find_states, replay_last, reset_branch, status_of
from .sensor import Decision, SensorState, advance, change_id, decide
from .sources import Observation
from .triggers import sensor_trigger

__all__ = [
    "BaseFlow",
    "Decision",
    "DevLoop",
    "DevLoopError",
    "FlowConfigError",
    "Observation",
    "PublishError",
    "ReplayError",
    "SensorState",
    "SourceError",
    "StateConflict",
    "StateError",
    "StateFormatError",
    "advance",
    "announcement",
    "change_id",
    "decide",
    "find_states",
    "load_flowconfig",
    "parse_flowconfig",
    "replay_last",
    "reset_branch",
    "s3",
    "sensor_trigger",
    "snowflake",
    "source",
    "status_of",
]
