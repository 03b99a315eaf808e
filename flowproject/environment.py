"""Packages a step needs when it runs in a Metaflow-built environment.

Under ``--environment=pypi`` or ``conda`` (and Outerbounds' fast-bakery) every step runs in an
environment Metaflow builds from ``@pypi`` / ``@conda``, which knows nothing of this project's
``pyproject.toml``. Metaflow attaches ``@conda`` to every step before step mutators run, so a
mutator can tell such a run from a plain ``run`` (where the step uses the launching Python and
adding ``@pypi`` would be an error) by the step's decorators alone.
"""

from importlib import metadata


def installed_version(distribution, fallback):
    """The installed version of ``distribution`` (read without importing it), else ``fallback``."""
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return fallback


def package_decorator_spec(step_specs, flow_specs, packages):
    """Which package decorator gives a step ``packages``, judged from its decorators.

    Parameters
    ----------
    step_specs : iterable of tuple
        ``MutableStep.decorator_specs``: (name, full name, args, kwargs).
    flow_specs : iterable of tuple
        ``MutableFlow.decorator_specs`` of the flow.
    packages : dict
        Distribution name to version (``"4.8.1"``) or range (``">=3.12,<5"``).

    Returns
    -------
    tuple or None
        ``(decorator name, kwargs)`` to add with ``MutableStep.OVERRIDE``; None when the step
        runs in the launching Python, or already pins every package.
    """
    step = {name: kwargs for name, _, _, kwargs in step_specs}
    flow = {name: kwargs for name, _, _, kwargs in flow_specs}
    if "pypi" not in step and "conda" not in step:
        return None
    # Packages go where the step already takes them: Metaflow refuses PyPI and Conda packages
    # in the same step. A pin the user wrote wins over ours.
    if "pypi" in step:
        target = "pypi"
    elif (step["conda"] or {}).get("packages") or (flow.get("conda_base") or {}).get("packages"):
        target = "conda"
    else:
        target = "pypi"
    kwargs = dict(step.get(target) or {})
    current = dict(kwargs.get("packages") or {})
    missing = {name: version for name, version in packages.items() if name not in current}
    if not missing:
        return None
    kwargs["packages"] = dict(current, **missing)
    return target, kwargs


def add_packages(mutable_step, packages):
    """Give ``mutable_step`` ``packages`` when it runs in a Metaflow-built environment.

    Parameters
    ----------
    mutable_step : MutableStep
        The step, in a ``StepMutator.mutate``.
    packages : dict
        Distribution name to version or range.
    """
    spec = package_decorator_spec(
        list(mutable_step.decorator_specs), list(mutable_step.flow.decorator_specs), packages
    )
    if spec is not None:
        name, kwargs = spec
        mutable_step.add_decorator(name, deco_kwargs=kwargs, duplicates=mutable_step.OVERRIDE)


def flow_file_of_main(main=None):
    """The flow file this process runs (``python flows/sensorflow.py run``), else None.

    A script run as a file (not ``-m``) whose source defines a flow: a FlowSpec or BaseFlow
    subclass. pytest, ``python -m flowproject``, notebooks and other scripts that import
    flowproject are not flow runs.
    """
    import os
    import re
    import sys

    main = main if main is not None else sys.modules.get("__main__")
    path = getattr(main, "__file__", None)
    if not path or getattr(main, "__spec__", None) is not None or not path.endswith(".py"):
        return None
    path = os.path.abspath(path)
    package = os.path.dirname(os.path.abspath(__file__))
    if path.startswith(package + os.sep):
        return None
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except OSError:
        return None
    if not re.search(r"^class\s+\w+\s*\([^)]*\b(FlowSpec|BaseFlow)\b", text, re.M):
        return None
    return path


def local_datastore_parent(flow_file):
    """The folder whose ``.metaflow`` a local run of ``flow_file`` uses: the nearest one
    holding a ``.metaflow`` from the flow file's folder upward, else the flow file's folder.

    Metaflow's own search, started at the flow file instead of the current folder.
    """
    import os

    start = os.path.dirname(os.path.abspath(flow_file))
    folder = start
    while True:
        if os.path.isdir(os.path.join(folder, ".metaflow")):
            return folder
        parent = os.path.dirname(folder)
        if parent == folder:
            return start
        folder = parent


def pin_local_datastore(main=None, environ=None):
    """Keep a flow's local datastore (and so the sensor state) where the flow file is, not
    where it was started from.

    Metaflow puts a local run's ``.metaflow`` in the nearest one found from the current
    folder upward, else creates one in the current folder: a run started from another folder
    would not see the state of the earlier runs and announce old data as a first check. So,
    unless ``METAFLOW_DATASTORE_SYSROOT_LOCAL`` is set (environment or Metaflow config), a
    flow run uses the ``.metaflow`` found from the flow file's folder upward, else creates
    one next to the flow file; the cards go with it (unless ``METAFLOW_CARD_LOCALROOT`` is
    set). Called when flowproject is imported; does nothing outside a flow run.

    Returns
    -------
    str or None
        The folder holding the ``.metaflow`` now used, or None when nothing was changed.
    """
    import os

    environ = os.environ if environ is None else environ
    if environ.get("METAFLOW_DATASTORE_SYSROOT_LOCAL"):
        return None
    flow_file = flow_file_of_main(main)
    if flow_file is None:
        return None
    from metaflow import metaflow_config

    if metaflow_config.DATASTORE_SYSROOT_LOCAL:  # set in ~/.metaflowconfig
        return None
    root = local_datastore_parent(flow_file)
    # The runtime's tasks are new processes of the flow file: they read these at import.
    environ["METAFLOW_DATASTORE_SYSROOT_LOCAL"] = root
    metaflow_config.DATASTORE_SYSROOT_LOCAL = root
    from metaflow.plugins.datastores.local_storage import LocalStorage

    LocalStorage.SYSROOT_VAR = root
    if not environ.get("METAFLOW_CARD_LOCALROOT") and not metaflow_config.CARD_LOCALROOT:
        cards = os.path.join(root, ".metaflow", metaflow_config.CARD_SUFFIX)
        environ["METAFLOW_CARD_LOCALROOT"] = cards
        metaflow_config.CARD_LOCALROOT = cards
        card_datastore = sys_module("metaflow.plugins.cards.card_datastore")
        if card_datastore is not None:
            card_datastore.CARD_LOCALROOT = cards
    return root


def sys_module(name):
    """``sys.modules[name]`` if that module is imported, else None."""
    import sys

    return sys.modules.get(name)
