"""Step decorators that give a step its data source.

``@s3`` and ``@snowflake`` open the client or connection of ``flowconfig.toml``'s ``[data]``
for the step, make it available to ``self.query()``, close it when the step ends, and record
what was checked in the ``checked`` artifact. ``@source`` picks one of them from
``[data] type``, so a flow that uses it switches sources by an edit of the config alone.

    from flowproject import BaseFlow, source

    class MyFlow(BaseFlow):
        @source
        @step
        def start(self):
            self.observation = self.query()
"""

from contextvars import ContextVar

from metaflow import StepMutator, user_step_decorator
from metaflow.exception import MetaflowException

from .sources import load_source

# The open session of the running step. Kept here, not on the flow object: everything set on
# the flow becomes an artifact, and a client or connection must not be pickled.
_active_session = ContextVar("flowproject_active_session", default=None)


class SourceDecoratorError(MetaflowException):
    headline = "Data source decorator misused"


def active_session():
    """The (source module, data, session) of the running step, or None outside ``@source``."""
    return _active_session.get()


def config_data(flow):
    """The validated ``[data]`` table of a flow's ``flowconfig`` as a plain dict."""
    return _plain(flow.flowconfig["data"])


def _plain(value):
    if hasattr(value, "to_dict"):
        return value.to_dict()
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


@user_step_decorator
def source_session(step_name, flow, inputs=None, attributes=None):
    """Open the configured source for the step; close it when the step ends.

    Added by ``@s3``, ``@snowflake`` and ``@source``; not used directly.
    """
    data = config_data(flow)
    expected = (attributes or {}).get("type")
    if expected and data["type"] != expected:
        raise SourceDecoratorError(
            "@%s is on step '%s' but flowconfig.toml has [data] type = %r: use @source to "
            "follow the config, or @%s." % (expected, step_name, data["type"], data["type"])
        )
    module = load_source(data["type"])
    with module.open_session(data) as session:
        token = _active_session.set((module, data, session))
        try:
            yield
        finally:
            _active_session.reset(token)
    flow.checked = {
        "source": module.describe(data),
        "requests": list(getattr(session, "requests", [])),
    }


class _SourceMutator(StepMutator):
    TYPE = None

    def mutate(self, mutable_step):
        mutable_step.add_decorator(source_session, deco_kwargs={"type": self.TYPE})


class s3(_SourceMutator):
    """Give the step an S3 client for ``flowconfig.toml``'s ``[data]`` (role assumed if set).

    Use above ``@step``; inside the step, ``self.query()`` checks the configured object or
    prefix. Requires ``[data] type = "s3"``.
    """

    TYPE = "s3"


# The PyPI distribution of the Snowflake connector, and the version range the project supports
# (fakesnow 0.12, used by the tests, does not import with 5.x).
CONNECTOR_PACKAGE = "snowflake-connector-python"
CONNECTOR_FALLBACK_VERSION = ">=3.12,<5"


def connector_version():
    """The installed connector's version (read without importing it), else a range."""
    from importlib import metadata

    try:
        return metadata.version(CONNECTOR_PACKAGE)
    except metadata.PackageNotFoundError:
        return CONNECTOR_FALLBACK_VERSION


def connector_package_spec(step_specs, flow_specs=(), version=None):
    """Which package decorator gives a step the connector, from the step's decorators.

    ``--environment=pypi`` and ``--environment=conda`` (and Outerbounds' fast-bakery) attach
    ``@conda`` to every step before step mutators run; ``@pypi_base`` attaches ``@pypi``.
    So a step with neither runs in the launching Python (plain ``run``, or
    ``--environment=uv``, whose packages come from pyproject.toml, where the connector is a
    dependency) and needs nothing: adding ``@pypi`` there would be an error.

    Parameters
    ----------
    step_specs : iterable of tuple
        ``MutableStep.decorator_specs``: (name, full name, args, kwargs).
    flow_specs : iterable of tuple
        ``MutableFlow.decorator_specs`` of the flow.
    version : str, optional
        Version of the connector; the installed one by default.

    Returns
    -------
    tuple or None
        ``(decorator name, kwargs)`` to add with ``MutableStep.OVERRIDE``, or None.
    """
    step = {name: kwargs for name, _, _, kwargs in step_specs}
    flow = {name: kwargs for name, _, _, kwargs in flow_specs}
    if "pypi" not in step and "conda" not in step:
        return None
    version = version or connector_version()
    # Packages go where the step already takes them: Metaflow refuses PyPI and Conda packages
    # in the same step. A pin the user wrote wins over ours.
    if "pypi" in step:
        target = "pypi"
    elif (step["conda"] or {}).get("packages") or (flow.get("conda_base") or {}).get("packages"):
        target = "conda"
    else:
        target = "pypi"
    kwargs = dict(step.get(target) or {})
    packages = dict(kwargs.get("packages") or {})
    if CONNECTOR_PACKAGE in packages:
        return None
    packages[CONNECTOR_PACKAGE] = version
    kwargs["packages"] = packages
    return target, kwargs


class snowflake(_SourceMutator):
    """Give the step a Snowflake connection for ``flowconfig.toml``'s ``[data]``.

    Use above ``@step``; inside the step, ``self.query()`` runs the configured SQL template.
    Requires ``[data] type = "snowflake"``. The connection opens on the first query and
    closes when the step ends; each query's text and duration go to the ``checked``
    artifact. Under ``--environment=pypi`` or ``conda`` the step also gets
    ``snowflake-connector-python`` as a package; under a plain ``run`` it uses the
    installed one.
    """

    TYPE = "snowflake"

    def mutate(self, mutable_step):
        super().mutate(mutable_step)
        spec = connector_package_spec(
            list(mutable_step.decorator_specs),
            list(mutable_step.flow.decorator_specs),
        )
        if spec is not None:
            name, kwargs = spec
            mutable_step.add_decorator(
                name, deco_kwargs=kwargs, duplicates=mutable_step.OVERRIDE
            )


class source(StepMutator):
    """Apply ``@s3`` or ``@snowflake`` according to ``flowconfig.toml``'s ``[data] type``."""

    def pre_mutate(self, mutable_step):
        configs = dict(mutable_step.flow.configs)
        data_type = configs["flowconfig"]["data"]["type"]
        mutable_step.add_decorator({"s3": s3, "snowflake": snowflake}[data_type])
