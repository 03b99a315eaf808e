"""flowproject: a Metaflow flow template for event-driven ML pipelines.

A cron-scheduled ``SensorFlow`` checks S3 prefixes, Snowflake queries or table formats (one
source or several), compares what it sees with what it last announced, and publishes an Argo
Event for each source whose data changed.
"""

from .baseflow import BaseFlow
from .changes import Changes, ObjectChange, UnknownSource, sensor_changes
from .config import WatchedSource, configured_sources, load_flowconfig, parse_flowconfig
from .decorators import announcement, s3, snowflake, source
from .devloop import DevLoop
from .environment import pin_local_datastore
from .exceptions import (
    DevLoopError,
    FlowConfigError,
    PublishError,
    ReplayError,
    SourceError,
    SourceIncomplete,
    SourcesFailed,
    StateConflict,
    StateError,
    StateFormatError,
)
from .once import ProcessedOnce
from .operations import find_states, replay_last, reset_branch, status_of
from .sensor import Decision, SensorState, advance, change_id, decide
from .source_check import SourceCheck
from .sources import Observation
from .triggers import sensor_trigger

__all__ = [
    "BaseFlow",
    "Changes",
    "Decision",
    "DevLoop",
    "DevLoopError",
    "FlowConfigError",
    "Observation",
    "ObjectChange",
    "ProcessedOnce",
    "PublishError",
    "ReplayError",
    "SensorState",
    "SourceCheck",
    "SourceError",
    "SourceIncomplete",
    "SourcesFailed",
    "StateConflict",
    "StateError",
    "StateFormatError",
    "UnknownSource",
    "WatchedSource",
    "advance",
    "announcement",
    "change_id",
    "configured_sources",
    "decide",
    "find_states",
    "load_flowconfig",
    "parse_flowconfig",
    "replay_last",
    "reset_branch",
    "s3",
    "sensor_changes",
    "sensor_trigger",
    "snowflake",
    "source",
    "status_of",
]

# A flow run keeps its local .metaflow (and the sensor state) by the flow file, whatever the
# current folder, unless METAFLOW_DATASTORE_SYSROOT_LOCAL says where (see the function).
pin_local_datastore()
