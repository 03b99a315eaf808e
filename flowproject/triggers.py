"""Starting a flow on the sensor's event(s).

``sensor_trigger`` wires a downstream flow to the event ``SensorFlow`` publishes in the same
``@project`` branch, and hands it the announced value as a Parameter, all from
``flowconfig.toml``: the flow file stays fixed when the event or payload key changes. With
``[sources.<name>]`` tables the flow names the source it waits for, or several: it then starts
once each of them has announced since its last start (Argo Events' AND of dependencies).
"""

import ast
import inspect
import textwrap

from metaflow import (
    FlowMutator,
    FlowSpec,
    Parameter,
    current,
    namespaced_event_name,
    trigger,
    user_step_decorator,
)

from .changes import sensor_changes
from .config import DEFAULT_SOURCE, configured_sources, is_multi_source
from .exceptions import FlowConfigError
from .once import DEFAULT_LEASE_SECONDS, ProcessedOnce


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


def payload_key_flow_problems(flow_cls, payload_key, step_names, setting="sensor.payload_key"):
    """Why ``payload_key`` cannot be a Parameter of ``flow_cls``: a name its class or one of its
    steps already uses. A Parameter is read-only in every step, so an artifact of the same
    name fails the step that sets it; a class member makes the flow fail to load. ``setting``
    is the flowconfig.toml key the messages name (``sources.<name>.payload_key``)."""
    where = "%s: %r cannot be a Parameter of %s:" % (setting, payload_key, flow_cls.__name__)
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


def payload_key_setting(config, watched):
    """The flowconfig.toml key that names ``watched``'s payload key, for messages."""
    if watched.name == DEFAULT_SOURCE:
        return "sensor.payload_key"
    return "sources.%s.payload_key" % watched.name


def triggering_sources(config, source=None, sources=None):
    """The sources a ``@sensor_trigger(source=..., sources=[...])`` waits for.

    Parameters
    ----------
    config : dict or ConfigValue
        A validated flowconfig (``self.flowconfig``).
    source : str, optional
        One source name.
    sources : list of str, optional
        Several source names: all of them are awaited together.

    Returns
    -------
    tuple
        ``(watched, problems)``: the ``WatchedSource`` objects in the order named, and one
        line per problem of the arguments (``watched`` is empty when there are problems).
    """
    watched = configured_sources(config)
    known = [w.name for w in watched]
    if source is not None and sources is not None:
        return [], ["@sensor_trigger: give source= or sources=, not both"]
    if source is None and sources is None:
        if is_multi_source(config):
            return [], [
                "@sensor_trigger: flowconfig.toml has [sources.<name>] tables; name the "
                'source(s): source="..." or sources=[...]; known: %s' % ", ".join(known)
            ]
        return watched, []
    if source is not None:
        argument, names = "source=", [source]
        if not isinstance(source, str):
            return [], [
                "@sensor_trigger(source=...): expected a source name (a string), found %r"
                % (source,)
            ]
    else:
        argument, names = "sources=", sources
        if not isinstance(sources, (list, tuple)) or not all(isinstance(n, str) for n in sources):
            hint = "; to name one, use source=%r" % sources if isinstance(sources, str) else ""
            return [], [
                "@sensor_trigger(sources=...): expected a list of source names, found %r%s"
                % (sources, hint)
            ]
        if not sources:
            return [], ["@sensor_trigger(sources=[]): name at least one source"]
    problems, seen = [], set()
    for name in names:
        if name in seen:
            problems.append(
                "@sensor_trigger(%s...): %r is named twice; Metaflow's multi-event @trigger "
                "rejects duplicate event names" % (argument, name)
            )
        elif name not in known and not is_multi_source(config):
            problems.append(
                "@sensor_trigger(%s...): no source named %r; flowconfig.toml has one [data] "
                "table, the source %r (or write [sources.%s] tables)"
                % (argument, name, DEFAULT_SOURCE, name)
            )
        elif name not in known:
            problems.append(
                "@sensor_trigger(%s...): no source named %r; flowconfig.toml has: %s"
                % (argument, name, ", ".join(known))
            )
        seen.add(name)
    if problems:
        return [], problems
    return [w for name in names for w in watched if w.name == name], []


def trigger_parameter_names(config, watched):
    """The Parameters ``@sensor_trigger`` adds for one source besides its payload key.

    ``{"change_id": name, "changes_url": name}``: ``sensor_change_id`` and
    ``sensor_changes_url`` with one ``[data]`` table, ``<source>_change_id`` and
    ``<source>_changes_url`` with ``[sources.<name>]`` tables; each maps the payload key of
    the same name (``change_id``, ``changes_url``).
    """
    prefix = "sensor" if watched.name == DEFAULT_SOURCE else watched.name
    return {key: "%s_%s" % (prefix, key) for key in ("change_id", "changes_url")}


def added_parameter_problems(flow_cls, config, watched, step_names):
    """Why the Parameters ``@sensor_trigger`` adds for ``watched`` (``trigger_parameter_names``)
    cannot be added: a payload key of a source, a step, attribute or artifact of the flow."""
    payload_keys = {w.sensor["payload_key"]: w for w in watched}
    problems = []
    for one in watched:
        for key, name in trigger_parameter_names(config, one).items():
            if name in payload_keys:
                problems.append(
                    "%s: %r is the Parameter @sensor_trigger adds for the %s of %s; choose "
                    "another payload_key"
                    % (
                        payload_key_setting(config, payload_keys[name]),
                        name,
                        key,
                        "the source" if one.name == DEFAULT_SOURCE else repr(one.name),
                    )
                )
                continue
            setting = "@sensor_trigger (%s of %s)" % (
                key,
                "the source" if one.name == DEFAULT_SOURCE else "source %r" % one.name,
            )
            problems += [
                p.replace("choose another name", "rename it in the flow")
                for p in payload_key_flow_problems(flow_cls, name, step_names, setting)
            ]
    return problems


def _change_ids(flow, parameters):
    """``{source: change_id}`` of the run from its Parameters ("" when started by hand)."""
    return {source: getattr(flow, name, "") or "" for source, name in parameters.items()}


def _marker(flow, attributes):
    """The processed-once marker of the change(s) the running flow was started for."""
    from .state import datastore_storage

    return ProcessedOnce(
        datastore_storage(flow),
        current.flow_name,
        current.get("project_name", None),
        current.get("branch_name", None) or "default",
        _change_ids(flow, attributes["change_params"]),
        _change_ids(flow, attributes.get("changes_params") or {}),
    )


def _sensor_changes_method(self, source=None):
    """What changed in the announcement that started this run: ``flowproject.changes.Changes``
    (iterate it to stream the objects added, modified and removed).

    Parameters
    ----------
    source : str, optional
        Which source's announcement, when the flow waits for several.
    """
    return sensor_changes(self, source)


@user_step_decorator
def sensor_once_claim(step_name, flow, inputs=None, attributes=None):
    """Before ``start``: claim the change(s) the run was started for; set
    ``self.sensor_duplicate`` (True: processed or being processed by another run)."""
    attributes = attributes or {}
    flow.sensor_duplicate = False
    if attributes.get("once", True):
        verdict = _marker(flow, attributes).claim(
            "%s/%s" % (current.flow_name, current.run_id),
            attributes.get("lease_seconds", DEFAULT_LEASE_SECONDS),
            also_mine=_origin(),
        )
        flow.sensor_duplicate = not verdict.proceed
        print("@sensor_trigger: %s" % verdict.reason)
    yield


@user_step_decorator
def sensor_once_done(step_name, flow, inputs=None, attributes=None):
    """After ``end``: mark the change(s) this run claimed as processed."""
    yield
    run = "%s/%s" % (current.flow_name, current.run_id)
    _marker(flow, attributes or {}).mark_done(run, also_mine=_origin())


def _origin():
    """The run a ``resume`` started from, whose claim this run continues."""
    origin = current.get("origin_run_id", None)
    return ["%s/%s" % (current.flow_name, origin)] if origin else []


class sensor_trigger(FlowMutator):
    """Start the flow on the sensor's event(s); receive each announced value as a Parameter.

    Reads the flow's ``flowconfig`` (so ``--config flowconfig PATH`` applies) and adds, for
    each source it waits for:

    - a ``Parameter`` named by the source's ``payload_key`` (default ``[trigger]
      parameter_default``, else ""), so a local run takes ``--<payload_key> value`` like any
      flow;
    - the event the sensor publishes for that source in the same ``@project`` branch
      (``mfns.<project>.<branch>.<event_name>``, or ``event_name`` when
      ``namespaced_events = false``) in one ``@trigger``, mapping the payload's
      ``payload_key`` to that Parameter.

    - ``sensor_change_id`` and ``sensor_changes_url`` (``<source>_change_id``,
      ``<source>_changes_url`` with ``[sources.<name>]`` tables), mapped from the payload's
      ``change_id`` and ``changes_url``: what ``self.sensor_changes()`` reads and what
      ``once`` de-duplicates on. A run started by hand leaves them empty: it is never a
      duplicate and ``sensor_changes()`` says there is nothing to read;
    - with ``once`` (the default), a claim on the change before ``start``'s code runs and a
      "processed" mark after ``end``'s (``flowproject.once``): ``self.sensor_duplicate`` tells
      ``start`` whether this delivery was already processed.

    With several sources the ``@trigger`` has several events (``events=[...]``): Argo Events
    starts the flow once each of them has arrived since the flow was last started (Metaflow's
    Sensor sets no ``conditions``, so every dependency is required), each Parameter taken from
    its own event. A multi-event ``@trigger`` has no automatic mapping: the mapping is always
    explicit here.

    Use it below ``@project`` so the namespaced name resolves to the deployment's branch.

    Parameters
    ----------
    source : str, optional
        The ``[sources.<name>]`` the flow waits for. Required (or ``sources``) when
        flowconfig.toml has ``[sources.<name>]`` tables; with one ``[data]`` table leave it out
        (bare ``@sensor_trigger``), or name that source ``"default"``.
    sources : list of str, optional
        Several sources, all awaited together (each named once).
    once : bool, default True
        Process each change once: a run started for a change this flow already processed in
        this ``@project`` branch (or is processing right now) sets ``self.sensor_duplicate``
        to True and says so in ``start``'s log; ``start`` then routes past the work (see
        starterflow.py). ``False``: every delivery is processed (``sensor_duplicate`` is
        always False).
    lease_seconds : float, default 3600
        How long a run's claim on its change holds if the run never reaches ``end`` (it
        died); then a new delivery of the change takes it over.

    Raises
    ------
    FlowConfigError
        When the flow loads, one line per problem: a bare ``@sensor_trigger`` with several
        sources configured, an unknown or repeated source name, ``source`` and ``sources``
        together, or a ``payload_key`` that is already a step, an attribute or an artifact
        (``self.<name> = ...``) of the flow (naming that key, e.g.
        ``sources.orders.payload_key``, and the flow), and likewise for the change id and
        changes Parameters (a payload key may not be one of them either).

    Examples
    --------
    ::

        @project(name=config_expr("flowconfig.project_name"))
        @sensor_trigger(sources=["orders", "events"])  # Parameters orders_version, events_version
        class TrainFlow(BaseFlow):
            ...
    """

    _source = _sources = None
    _once, _lease_seconds = True, DEFAULT_LEASE_SECONDS

    def init(self, source=None, sources=None, once=True, lease_seconds=DEFAULT_LEASE_SECONDS):
        self._source, self._sources = source, sources
        self._once, self._lease_seconds = once, lease_seconds

    def pre_mutate(self, mutable_flow):
        config = dict(mutable_flow.configs).get("flowconfig")
        if config is None:
            raise ValueError("@sensor_trigger needs a flow with the 'flowconfig' Config (BaseFlow)")
        watched, problems = triggering_sources(config, self._source, self._sources)
        step_names = [name for name, _ in mutable_flow.steps]
        for one in watched:
            setting = payload_key_setting(config, one)
            problems += payload_key_flow_problems(
                self._flow_cls, one.sensor["payload_key"], step_names, setting
            )
        problems += added_parameter_problems(self._flow_cls, config, watched, step_names)
        if problems:
            raise FlowConfigError(problems)
        default = config.get("trigger", {}).get("parameter_default", "")
        events, change_params = [], {}
        for one in watched:
            key = one.sensor["payload_key"]
            mutable_flow.add_parameter(
                key,
                Parameter(
                    key,
                    type=str,
                    default=default,
                    help="The value the sensor announced (event payload key '%s')." % key,
                ),
            )
            mapping = {key: key}
            for payload_field, name in trigger_parameter_names(config, one).items():
                mutable_flow.add_parameter(
                    name,
                    Parameter(
                        name,
                        type=str,
                        default="",
                        help="The announcement's %s (event payload key '%s'); empty when "
                        "started by hand." % (payload_field, payload_field),
                    ),
                )
                mapping[name] = payload_field
            change_params[one.name] = trigger_parameter_names(config, one)["change_id"]
            # namespaced_event_name resolves when the flow is deployed, with the @project
            # branch of that deployment: the same function the sensor calls when it publishes.
            name = one.sensor["event_name"]
            if one.sensor.get("namespaced_events", True):
                name = namespaced_event_name(name)
            events.append({"name": name, "parameters": mapping})
        # self.sensor_changes(source=None) reads the changes_url Parameter of a source.
        flow_cls = self._flow_cls
        flow_cls._sensor_changes_params = {
            one.name: trigger_parameter_names(config, one)["changes_url"] for one in watched
        }
        flow_cls.sensor_changes = _sensor_changes_method
        attributes = {
            "change_params": change_params,
            "changes_params": dict(flow_cls._sensor_changes_params),
            "once": bool(self._once),
            "lease_seconds": self._lease_seconds,
        }
        for step_name, step in mutable_flow.steps:
            if step_name == "start":
                step.add_decorator(sensor_once_claim, deco_kwargs=attributes)
            elif step_name == "end" and self._once:
                step.add_decorator(sensor_once_done, deco_kwargs=attributes)
        if len(events) == 1:
            mutable_flow.add_decorator(trigger, deco_kwargs={"event": events[0]})
        else:
            mutable_flow.add_decorator(trigger, deco_kwargs={"events": events})
