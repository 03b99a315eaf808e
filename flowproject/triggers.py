"""Starting a flow on the sensor's event.

``sensor_trigger`` wires a downstream flow to the event ``SensorFlow`` publishes in the same
``@project`` branch, and hands it the announced value as a Parameter, all from
``flowconfig.toml``: the flow file stays fixed when the event or payload key changes.
"""

from metaflow import FlowMutator, Parameter, namespaced_event_name, trigger


class sensor_trigger(FlowMutator):
    """Start the flow on the sensor's event; receive its value as a Parameter.

    Reads the flow's ``flowconfig`` (so ``--config flowconfig PATH`` applies) and adds:

    - a ``Parameter`` named ``[sensor] payload_key`` (default ``[trigger] parameter_default``,
      else ""), so a local run takes ``--<payload_key> value`` like any flow;
    - ``@trigger`` on the event the sensor publishes in the same ``@project`` branch
      (``mfns.<project>.<branch>.<event_name>``, or ``event_name`` when
      ``namespaced_events = false``), mapping the payload's ``payload_key`` to that Parameter.

    Use it below ``@project`` so the namespaced name resolves to the deployment's branch.
    """

    def pre_mutate(self, mutable_flow):
        config = dict(mutable_flow.configs).get("flowconfig")
        if config is None:
            raise ValueError("@sensor_trigger needs a flow with the 'flowconfig' Config (BaseFlow)")
        sensor = config.sensor
        key = sensor.payload_key
        default = config.get("trigger", {}).get("parameter_default", "")
        mutable_flow.add_parameter(
            key,
            Parameter(
                key,
                type=str,
                default=default,
                help="The value the sensor announced (event payload key '%s')." % key,
            ),
        )
        # namespaced_event_name resolves when the flow is deployed, with the @project branch
        # of that deployment: the same function the sensor calls when it publishes.
        name = sensor.event_name
        if sensor.get("namespaced_events", True):
            name = namespaced_event_name(name)
        mutable_flow.add_decorator(
            trigger, deco_kwargs={"event": {"name": name, "parameters": {key: key}}}
        )
