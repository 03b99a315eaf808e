"""Step decorators that give a step its data sources.

``@source`` marks the step that checks the sources of ``flowconfig.toml``
(``self.check_sources()``): under ``--environment=pypi`` or ``conda`` it gives the step the
packages each configured source module declares (``flowproject.sources``). Each source's
client or connection is opened by its own check, in its own thread, and closed when that
check ends. ``@s3`` and ``@snowflake`` are ``@source`` requiring every source to be of one
type.

    from flowproject import BaseFlow, source

    class MyFlow(BaseFlow):
        @source
        @step
        def start(self):
            self.route = self.check_sources()
"""

from metaflow import StepMutator, card, user_step_decorator

from .config import configured_sources
from .environment import add_packages, installed_version, package_decorator_spec
from .exceptions import FlowprojectException
from .sources import load_source


class SourceDecoratorError(FlowprojectException):
    headline = "Data source decorator misused"


@user_step_decorator
def source_session(step_name, flow, inputs=None, attributes=None):
    """Check, when the step starts, that the sources are of the type a typed decorator
    (``@s3``, ``@snowflake``) requires. Added by ``@source``; not used directly."""
    expected = (attributes or {}).get("type")
    for watched in configured_sources(flow.flowconfig) if expected else ():
        if watched.data["type"] != expected:
            where = "[data]" if watched.name == "default" else "[sources.%s]" % watched.name
            raise SourceDecoratorError(
                "@%s is on step '%s' but flowconfig.toml has %s type = %r: use @source to "
                "follow the config, or @%s."
                % (expected, step_name, where, watched.data["type"], watched.data["type"])
            )
    yield


class source(StepMutator):
    """Give the step the data sources of ``flowconfig.toml``.

    Use above ``@step``; inside the step, ``self.check_sources()`` checks every source.
    Under ``--environment=pypi`` or ``conda`` the step also gets the packages the source
    modules declare (``PACKAGES``); under a plain ``run`` it uses the installed ones. Which
    sources is the config's: a flow switches sources by an edit of the config alone.
    """

    # Set by the typed decorators below: the step then requires this source type.
    TYPE = None

    def mutate(self, mutable_step):
        configs = dict(mutable_step.flow.configs)
        mutable_step.add_decorator(source_session, deco_kwargs={"type": self.TYPE or ""})
        packages = {}
        for watched in configured_sources(configs["flowconfig"]):
            if self.TYPE and watched.data["type"] != self.TYPE:
                return  # source_session says what is wrong when the step runs
            packages.update(source_packages(load_source(watched.data["type"])))
        add_packages(mutable_step, packages)


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
    """Mark the step that announces changes (the one calling ``self.announce_changes()``).

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
