"""flowproject: a Metaflow flow template for event-driven ML pipelines.

A cron-scheduled ``SensorFlow`` checks S3 prefixes, Snowflake queries or table formats (one
source or several), compares what it sees with what it last announced, and publishes an Argo
Event for each source whose data changed.
"""

import importlib

from .environment import pin_local_datastore

# Each public name and the module that defines it, imported on first use (PEP 562): a flow
# imports Metaflow anyway, but the helpers ./deploy runs for every flow (branch names, the
# compiled sensor's summary) need none of it, and Metaflow's import is 0.3 s of CPU each.
_EXPORTS = {
    "BaseFlow": "baseflow",
    "Changes": "changes",
    "ObjectChange": "changes",
    "UnknownSource": "changes",
    "sensor_changes": "changes",
    "WatchedSource": "config",
    "configured_sources": "config",
    "load_flowconfig": "config",
    "parse_flowconfig": "config",
    "announcement": "decorators",
    "s3": "decorators",
    "snowflake": "decorators",
    "source": "decorators",
    "DevLoop": "devloop",
    "DevLoopError": "exceptions",
    "FlowConfigError": "exceptions",
    "PublishError": "exceptions",
    "ReplayError": "exceptions",
    "SourceError": "exceptions",
    "SourceIncomplete": "exceptions",
    "SourcesFailed": "exceptions",
    "StateConflict": "exceptions",
    "StateError": "exceptions",
    "StateFormatError": "exceptions",
    "ProcessedOnce": "once",
    "find_states": "operations",
    "replay_last": "operations",
    "reset_branch": "operations",
    "status_of": "operations",
    "Decision": "sensor",
    "SensorState": "sensor",
    "advance": "sensor",
    "change_id": "sensor",
    "decide": "sensor",
    "SourceCheck": "source_check",
    "Observation": "sources",
    "sensor_trigger": "triggers",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name):
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError("module %r has no attribute %r" % (__name__, name))
    value = getattr(importlib.import_module("." + module, __name__), name)
    globals()[name] = value  # once: later lookups do not come here
    return value


def __dir__():
    return sorted(set(globals()) | set(_EXPORTS))


# A flow run keeps its local .metaflow (and the sensor state) by the flow file, whatever the
# current folder, unless METAFLOW_DATASTORE_SYSROOT_LOCAL says where (see the function).
pin_local_datastore()
