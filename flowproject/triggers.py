"""Starting a flow on the sensor's event.

``sensor_trigger`` wires a downstream flow to the event ``SensorFlow`` publishes in the same
``@project`` branch, and hands it the announced value as a Parameter, all from
``flowconfig.toml``: the flow file stays fixed when the event or payload key changes.
"""

import ast
import inspect
import textwrap

from metaflow import FlowMutator, FlowSpec, Parameter, namespaced_event_name, trigger

from .exceptions import FlowConfigError


def assigned_artifacts(flow_cls):
    """``{name: method}`` for each ``self.<name> = ...`` in the methods of ``flow_cls`` and its
    bases (up to ``FlowSpec``): the artifacts its steps set, found by reading the source."""
    found = {}
    for cls in reversed(flow_cls.__mro__):
        if not (isinstance(cls, type) and issubclass(cls, FlowSpec)) or cls is FlowSpec:
            continue
        try:
            tree = ast.parse(textwrap.dedent(inspect.getsource(cls)))
        except (OSError, TypeError, SyntaxError):
            continue  # no source (an interactive session): the run itself will tell
        for method in ast.walk(tree):
            if not isinstance(method, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            for node in ast.walk(method):
                if isinstance(node, ast.Assign):
                    targets = node.targets
                elif isinstance(node, (ast.AugAssign, ast.AnnAssign)):
                    targets = [node.target]
                else:
                    continue
                for target in targets:
                    for leaf in ast.walk(target):
                        if (
                            isinstance(leaf, ast.Attribute)
                            and isinstance(leaf.value, ast.Name)
                            and leaf.value.id == "self"
                            and isinstance(leaf.ctx, ast.Store)
                        ):
                            found.setdefault(leaf.attr, method.name)
    return found


def payload_key_flow_problems(flow_cls, payload_key, step_names):
    """Why ``payload_key`` cannot be a Parameter of ``flow_cls``: a name its class or one of its
    steps already uses. A Parameter is read-only in every step, so an artifact of the same
    name fails the step that sets it; a class member makes the flow fail to load."""
    where = "sensor.payload_key: %r cannot be a Parameter of %s:" % (payload_key, flow_cls.__name__)
    if payload_key in step_names:
        return ["%s it is a step of the flow; choose another name" % where]
    if hasattr(flow_cls, payload_key):
        return ["%s it is an attribute of the flow; choose another name" % where]
    artifacts = assigned_artifacts(flow_cls)
    if payload_key in artifacts:
        method = artifacts[payload_key]
        return [
            "%s %s %r sets self.%s, and a Parameter cannot be assigned; choose another name"
            % (where, "step" if method in step_names else "method", method, payload_key)
        ]
    return []


class sensor_trigger(FlowMutator):
    """Start the flow on the sensor's event; receive its value as a Parameter.

    Reads the flow's ``flowconfig`` (so ``--config flowconfig PATH`` applies) and adds:

    - a ``Parameter`` named ``[sensor] payload_key`` (default ``[trigger] parameter_default``,
      else ""), so a local run takes ``--<payload_key> value`` like any flow;
    - ``@trigger`` on the event the sensor publishes in the same ``@project`` branch
      (``mfns.<project>.<branch>.<event_name>``, or ``event_name`` when
      ``namespaced_events = false``), mapping the payload's ``payload_key`` to that Parameter.

    Use it below ``@project`` so the namespaced name resolves to the deployment's branch.
    The flow fails to load, naming ``payload_key`` and the flow, when that name is already a
    step, an attribute or an artifact (``self.<name> = ...``) of the flow.
    """

    def pre_mutate(self, mutable_flow):
        config = dict(mutable_flow.configs).get("flowconfig")
        if config is None:
            raise ValueError("@sensor_trigger needs a flow with the 'flowconfig' Config (BaseFlow)")
        sensor = config.sensor
        key = sensor.payload_key
        problems = payload_key_flow_problems(
            self._flow_cls, key, [name for name, _ in mutable_flow.steps]
        )
        if problems:
            raise FlowConfigError(problems)
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
