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

from metaflow import StepMutator, card, user_step_decorator

from .environment import add_packages, installed_version, package_decorator_spec
from .exceptions import FlowprojectException
from .sources import load_source

# The open session of the running step. Kept here, not on the flow object: everything set on
# the flow becomes an artifact, and a client or connection must not be pickled.
_active_session = ContextVar("flowproject_active_session", default=None)


class SourceDecoratorError(FlowprojectException):
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

    def mutate(self, mutable_step):
        super().mutate(mutable_step)
        add_packages(mutable_step, {"boto3": installed_version("boto3", ">=1.34")})


# The PyPI distribution of the Snowflake connector, and the version range the project supports
# (fakesnow 0.12, used by the tests, does not import with 5.x).
CONNECTOR_PACKAGE = "snowflake-connector-python"
CONNECTOR_FALLBACK_VERSION = ">=3.12,<5"


def connector_version():
    """The installed connector's version (read without importing it), else a range."""
    return installed_version(CONNECTOR_PACKAGE, CONNECTOR_FALLBACK_VERSION)


def connector_package_spec(step_specs, flow_specs=(), version=None):
    """The package decorator giving a step the connector; see ``package_decorator_spec``."""
    return package_decorator_spec(
        step_specs, flow_specs, {CONNECTOR_PACKAGE: version or connector_version()}
    )


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
        add_packages(mutable_step, {CONNECTOR_PACKAGE: connector_version()})


class source(StepMutator):
    """Apply ``@s3`` or ``@snowflake`` according to ``flowconfig.toml``'s ``[data] type``."""

    def pre_mutate(self, mutable_step):
        configs = dict(mutable_step.flow.configs)
        data_type = configs["flowconfig"]["data"]["type"]
        mutable_step.add_decorator({"s3": s3, "snowflake": snowflake}[data_type])


# What publishing imports at run time, besides Metaflow itself.
ANNOUNCE_PACKAGES = {"tenacity": ">=8.2"}

CARD_ID = "sensor"


class announcement(StepMutator):
    """Mark the step that announces changes (the one calling ``self.announce()``).

    It gets the ``sensor`` card showing the check (unless ``[sensor] card = false``: Metaflow
    renders a card in a separate process, about a second and 1 MB per card), and under
    ``--environment=pypi`` or ``conda`` the packages publishing needs.
    """

    def pre_mutate(self, mutable_step):
        configs = dict(mutable_step.flow.configs)
        if configs["flowconfig"]["sensor"].get("card", True):
            mutable_step.add_decorator(card, deco_kwargs={"type": "blank", "id": CARD_ID})

    def mutate(self, mutable_step):
        add_packages(
            mutable_step,
            {name: installed_version(name, spec) for name, spec in ANNOUNCE_PACKAGES.items()},
        )
