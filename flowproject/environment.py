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
