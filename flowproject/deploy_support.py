"""Helpers for deploying the project's flows: branch names and the sensor's trigger.

- ``branch_name(git_branch)``: a git branch as a Metaflow ``@project`` branch, which
  ``./deploy`` passes to ``--branch``;
- ``sensor_trigger``: a flow mutator that starts a flow on the sensor's event and passes the
  event's value in as the Parameter named by ``[sensor] payload_key``.

    python -m flowproject.deploy_support branch-name "feature/New-Model"   # feature_new_model
"""

import re
import sys

from metaflow import FlowMutator, Parameter, namespaced_event_name, trigger

# Metaflow's @project accepts [a-z0-9_] up to 128 characters in a branch name. Argo then
# drops '_' from the Kubernetes name and shortens names over 45 characters with a hash, so
# there is no point in going longer than this.
BRANCH_MAX_LEN = 40

PRODUCTION_BRANCHES = ("main", "master")


def branch_name(git_branch):
    """A git branch name made valid as a Metaflow ``@project`` branch.

    Lowercase; every run of characters other than ``[a-z0-9]`` becomes one ``_``; no ``_``
    at either end; at most ``BRANCH_MAX_LEN`` characters.

    Parameters
    ----------
    git_branch : str
        e.g. ``"feature/New-Model"`` or ``"refs/heads/fix-42"``.

    Returns
    -------
    str
        e.g. ``"feature_new_model"``, ``"fix_42"``.

    Raises
    ------
    ValueError
        If nothing usable is left (``"///"``).
    """
    name = git_branch.strip()
    if name.startswith("refs/heads/"):
        name = name[len("refs/heads/") :]
    name = re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_")
    name = name[:BRANCH_MAX_LEN].rstrip("_")
    if not name:
        raise ValueError("branch name %r has no letters or digits" % git_branch)
    return name


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


def _main(argv):
    if len(argv) == 2 and argv[0] == "branch-name":
        try:
            print(branch_name(argv[1]))
        except ValueError as e:
            print(e, file=sys.stderr)
            return 1
        return 0
    print("usage: python -m flowproject.deploy_support branch-name GIT_BRANCH", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
