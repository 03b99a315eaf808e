"""Step decorators that give a step its data source.

``@source`` opens the client or connection of ``flowconfig.toml``'s ``[data]`` for the step,
makes it available to ``self.query()``, closes it when the step ends, and records what was
checked in the ``checked`` artifact. Which source, and which packages the step needs, come
from the source module that ``[data] type`` names (``flowproject.sources``); ``@s3`` and
``@snowflake`` are ``@source`` requiring one type.

    from flowproject import BaseFlow, source

    class MyFlow(BaseFlow):
        @source
        @step
        def start(self):
            self.observation = self.query()
"""

from contextvars import ContextVar

from metaflow import StepMutator, card, user_step_decorator

from .config import configured_sources, is_multi_source
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

    Added by ``@source``; not used directly.
    """
    if is_multi_source(flow.flowconfig):
        # Each source is opened in its own thread by BaseFlow.check_sources.
        yield
        return
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


class source(StepMutator):
    """Give the step the data source of ``flowconfig.toml``'s ``[data]``.

    Use above ``@step``; inside the step, ``self.query()`` checks the configured source once.
    The client or connection opens for the step and closes when it ends; what was asked goes
    to the ``checked`` artifact. Under ``--environment=pypi`` or ``conda`` the step also gets
    the packages the source module declares (``PACKAGES``); under a plain ``run`` it uses
    the installed ones. Which source is ``[data] type``'s: a flow switches sources by an
    edit of the config alone.
    """

    # Set by the typed decorators below: the step then requires this ``[data] type``.
    TYPE = None

    def mutate(self, mutable_step):
        configs = dict(mutable_step.flow.configs)
        if is_multi_source(configs["flowconfig"]):
            # Every configured source's packages; BaseFlow.check_sources opens each source.
            mutable_step.add_decorator(source_session, deco_kwargs={"type": self.TYPE or ""})
            packages = {}
            for watched in configured_sources(configs["flowconfig"]):
                packages.update(source_packages(load_source(watched.data["type"])))
            add_packages(mutable_step, packages)
            return
        data_type = self.TYPE or configs["flowconfig"]["data"]["type"]
        mutable_step.add_decorator(source_session, deco_kwargs={"type": data_type})
        if self.TYPE and configs["flowconfig"]["data"]["type"] != self.TYPE:
            return  # source_session says what is wrong when the step runs
        add_packages(mutable_step, source_packages(load_source(data_type)))


def source_packages(module):
    """``{distribution: version}`` a source module declares in ``PACKAGES``: the installed
    version where there is one, else the module's range."""
    return {
        name: installed_version(name, spec)
        for name, spec in getattr(module, "PACKAGES", {}).items()
    }


class s3(source):
    """``@source`` that requires ``[data] type = "s3"`` (an S3 client for the step)."""

    TYPE = "s3"


# The PyPI distribution of the Snowflake connector (declared by sources/snowflake.py too).
CONNECTOR_PACKAGE = "snowflake-connector-python"


def connector_version():
    """The installed connector's version (read without importing it), else a range."""
    from .sources import snowflake as snowflake_source

    return installed_version(CONNECTOR_PACKAGE, snowflake_source.PACKAGES[CONNECTOR_PACKAGE])


def connector_package_spec(step_specs, flow_specs=(), version=None):
    """The package decorator giving a step the connector; see ``package_decorator_spec``."""
    return package_decorator_spec(
        step_specs, flow_specs, {CONNECTOR_PACKAGE: version or connector_version()}
    )


class snowflake(source):
    """``@source`` that requires ``[data] type = "snowflake"`` (a Snowflake connection for the
    step, opened on the first query; the connector as a package under ``--environment=pypi``
    or ``conda``)."""

    TYPE = "snowflake"


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
