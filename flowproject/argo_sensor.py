"""What Argo Events would do with an event: the Sensor Metaflow compiles for a triggered flow.

Metaflow turns a flow's ``@trigger`` into an Argo Events Sensor on ``argo-workflows create``,
but ``--only-json`` prints the WorkflowTemplate alone. This module runs a flow file's own
command line with Metaflow's ``make_flow`` wrapped, so that the same code path also yields:

- ``--sensor-out PATH``: the compiled Sensor (``ArgoWorkflows._sensor``) as JSON, written
  beside the WorkflowTemplate by ``./deploy --dry-run``; nothing is written for a flow without
  a trigger. Compiling needs what ``create`` needs (an S3 datastore, Argo Events settings).
- ``--describe-out PATH``: the flow's triggers and parameters as Metaflow processes them
  (``_process_triggers`` and ``_process_parameters``: automatic mapping, lowercase names),
  without packaging code or any datastore. The dev loop matches events with it.

    python -m flowproject.argo_sensor --sensor-out out/starterflow.sensor.json \\
        starterflow.py --production argo-workflows create --only-json

- ``--summary PATH``: one line saying what starts the flow of a Sensor or description file.

``trigger_rules`` reads either form into one shape, so both are checked against one
expectation in the tests.
"""

import json
import re
import runpy
import sys

# The payload key of a trigger parameter, in the dataTemplate Metaflow's Sensor uses.
_HAS_KEY = re.compile(r'hasKey \$\.Input\.body\.payload "([^"]+)"')
# The destination of a trigger parameter: the workflow parameter it sets.
_DEST = re.compile(r"^spec\.arguments\.parameters\.#\(name=(.+)\)\.value$")
# The event-name filter of a dependency.
_NAME_EXPR = re.compile(r"^name == '(.+)'$")


def describe(argo_workflows):
    """The triggers and parameters of an ``ArgoWorkflows`` object, as plain JSON data.

    Parameters
    ----------
    argo_workflows : ArgoWorkflows
        With ``triggers`` and ``parameters`` set by Metaflow's ``_process_*`` methods.

    Returns
    -------
    dict
        ``{"flow": name, "project": name or None, "branch": @project branch or None,
        "parameters": {name: {"required": bool, "default": json}},
        "triggers": [{"name": event, "parameters": {param: payload_key}}]}``.
    """
    from metaflow import current

    return {
        "flow": argo_workflows.flow.name,
        "project": current.get("project_name"),
        "branch": current.get("branch_name"),
        "parameters": {
            name: {"required": bool(p["is_required"]), "default": p["value"]}
            for name, p in argo_workflows.parameters.items()
        },
        "triggers": [
            {"name": t["name"], "parameters": dict(t.get("parameters") or {})}
            for t in argo_workflows.triggers
            if t.get("type") == "event"
        ],
    }


def trigger_rules(source):
    """Which events start a flow, and how each maps its payload to the flow's Parameters.

    Parameters
    ----------
    source : dict
        A compiled Sensor (``--sensor-out``) or a description (``--describe-out``).

    Returns
    -------
    list of dict
        One per event, sorted by name: ``{"event": name, "parameters": {param: payload_key},
        "required": [payload keys whose absence starts nothing]}``. Several rules are
        required together: the flow starts once each event has arrived since its last start,
        each Parameter from its own event (a Sensor's dependency). Metaflow compiles one
        trigger without ``conditions``, and Argo Events then requires every dependency.

    Raises
    ------
    ValueError
        For a Sensor whose trigger has ``conditions`` (not one Metaflow compiles): its
        dependencies would not all be required.
    """
    if source.get("kind") != "Sensor":
        required = {n.lower() for n, p in source["parameters"].items() if p["required"]}
        return sorted(
            (
                {
                    "event": t["name"],
                    "parameters": dict(t["parameters"]),
                    "required": sorted(k for p, k in t["parameters"].items() if p in required),
                }
                for t in source["triggers"]
            ),
            key=lambda r: r["event"],
        )
    spec = source["spec"]
    by_dependency = {}
    for dependency in spec["dependencies"]:
        event, required = None, []
        for expr in dependency["filters"]["exprs"]:
            match = _NAME_EXPR.match(expr["expr"])
            if match and expr["fields"][0]["path"] == "body.payload.name":
                event = match.group(1)
            elif expr["expr"] == "true == true":
                required.append(expr["fields"][0]["path"][len("body.payload.") :])
        by_dependency[dependency["name"]] = {
            "event": event,
            "parameters": {},
            "required": sorted(required),
        }
    for trigger in spec["triggers"]:
        if trigger["template"].get("conditions"):
            raise ValueError(
                "trigger %r of the Sensor has conditions %r: only Sensors where every "
                "dependency is required (Metaflow's) are read"
                % (trigger["template"].get("name"), trigger["template"]["conditions"])
            )
        for parameter in trigger["template"]["k8s"]["parameters"]:
            src = parameter["src"]
            key = _HAS_KEY.search(src.get("dataTemplate") or "")
            if key is None:  # the whole payload, for the run's current.trigger
                continue
            dest = _DEST.match(parameter["dest"]).group(1)
            by_dependency[src["dependencyName"]]["parameters"][dest] = key.group(1)
    return sorted(by_dependency.values(), key=lambda r: r["event"])


def rules_summary(rules):
    """What starts the flow, in one line (``./deploy --dry-run`` prints it per Sensor).

    Parameters
    ----------
    rules : list of dict
        From ``trigger_rules``.

    Returns
    -------
    str
        ``starts on <event> (param <- payload key)``, or for several events ``starts when
        each has arrived since its last start: <event> (...) AND <event> (...)``.
    """
    parts = [
        "%s (%s)"
        % (
            rule["event"],
            ", ".join("%s <- %s" % (p, k) for p, k in sorted(rule["parameters"].items()))
            or "no parameters",
        )
        for rule in rules
    ]
    if len(parts) == 1:
        return "starts on " + parts[0]
    return "starts when each has arrived since its last start: " + " AND ".join(parts)


def _main(argv):
    if argv[:1] == ["--summary"] and len(argv) == 2:
        with open(argv[1]) as f:
            print(rules_summary(trigger_rules(json.load(f))))
        return 0
    sensor_out = describe_out = None
    while argv and argv[0] in ("--sensor-out", "--describe-out"):
        if argv[0] == "--sensor-out":
            sensor_out = argv[1]
        else:
            describe_out = argv[1]
        argv = argv[2:]
    if not argv or (sensor_out is None) == (describe_out is None):
        print(
            "usage: python -m flowproject.argo_sensor (--sensor-out | --describe-out) PATH "
            "FLOW_FILE [FLOW ARGS...] argo-workflows create --only-json\n"
            "       python -m flowproject.argo_sensor --summary SENSOR_OR_DESCRIPTION_JSON",
            file=sys.stderr,
        )
        return 2

    from metaflow.plugins.argo import argo_workflows_cli
    from metaflow.plugins.argo.argo_workflows import ArgoWorkflows

    make_flow = argo_workflows_cli.make_flow

    def make_flow_and_sensor(obj, *args, **kwargs):
        flow = make_flow(obj, *args, **kwargs)
        if flow._sensor:  # a flow without @trigger has no Sensor
            with open(sensor_out, "w") as f:
                json.dump(flow._sensor.to_json(), f, indent=2)
        return flow

    def describe_only(obj, *args, **kwargs):
        # Metaflow's own processing of @trigger and Parameters, without packaging code.
        flow = ArgoWorkflows.__new__(ArgoWorkflows)
        flow.flow = obj.flow
        flow.parameters = flow._process_parameters()
        flow.triggers, flow.trigger_options = flow._process_triggers()
        with open(describe_out, "w") as f:
            json.dump(describe(flow), f, indent=2)
        raise SystemExit(0)

    argo_workflows_cli.make_flow = make_flow_and_sensor if sensor_out else describe_only
    sys.argv = list(argv)
    runpy.run_path(argv[0], run_name="__main__")
    return 0


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
