"""Options shared by ``status``, ``reset`` and ``replay``: which flow, project, branch and
source."""

import os
import sys

import click

from ..exceptions import FlowprojectException


def load_config(path, required=False):
    """The parsed ``flowconfig.toml`` at ``path`` (``./flowconfig.toml`` by default), or None
    when there is no such file and it is not ``required``."""
    from ..config import load_flowconfig

    path = path or "flowconfig.toml"
    if not os.path.exists(path):
        if required:
            raise click.UsageError("%s not found: pass --config PATH" % path)
        return None
    return load_flowconfig(path)


def target_options(command):
    """``--flow``, ``--project``, ``--branch``, ``--production`` and ``--config``."""
    options = [
        click.option(
            "--config",
            type=click.Path(dir_okay=False),
            default=None,
            help="flowconfig.toml naming the project and the source (default: ./flowconfig.toml).",
        ),
        click.option("--production", is_flag=True, help="The @project production branch (prod)."),
        click.option(
            "--branch",
            default=None,
            help="The @project branch as for a run (x -> test.x), or a full branch name "
            "(user.alice, test.x, prod). Default: user.<you>.",
        ),
        click.option("--project", default=None, help="The @project name (default: the config's)."),
        click.option(
            "--flow",
            default="SensorFlow",
            show_default=True,
            help="The sensor flow's class name.",
        ),
    ]
    for option in options:
        command = option(command)
    return command


def fail(error, code=2):
    """Print a flowproject error as ``Headline: message`` and exit with ``code``."""
    if isinstance(error, FlowprojectException):
        click.echo("%s: %s" % (error.headline, error.message), err=True)
    else:
        click.echo(str(error), err=True)
    sys.exit(code)


def resolve_target(flow, project, branch, production, config, storage=None):
    """``(StateStore, config)`` of the branch the options name (in ``storage``, by default
    the configured datastore)."""
    from ..operations import project_branch, state_store

    if branch and production and "." in branch:
        raise click.UsageError("--production goes with a branch as for a run, not a full name")
    if project is None:
        if config is None:
            raise click.UsageError("no flowconfig.toml here: pass --project or --config")
        project = config["project_name"]
    return state_store(flow, project, project_branch(branch, production), storage), config


def source_option(help_text):
    """``--source NAME``: one source of a multi-source ``flowconfig.toml``."""
    return click.option("--source", "source", default=None, metavar="NAME", help=help_text)


def resolve_sources(store, config, source=None):
    """The names of the sources a command acts on: ``source`` if given, else every source of
    the branch (``config``'s, else those stored for it; ``["default"]`` for the single-source
    form). An unknown ``source`` is a usage error naming the known ones."""
    from ..operations import known_sources

    known = known_sources(store.flow_name, store.project, store.branch, config, store.storage)
    if source is None:
        return known
    if source not in known:
        if config is not None:
            where = "flowconfig.toml has"
        else:
            where = "without a flowconfig.toml, the sources stored for %s branch %s are" % (
                store.flow_name,
                store.branch,
            )
        raise click.BadParameter(
            "no source named %r; %s: %s" % (source, where, ", ".join(known)),
            param_hint="'--source'",
        )
    return [source]


def store_of(store, source):
    """The ``StateStore`` of ``source`` in the branch of ``store``."""
    from ..operations import state_store

    return state_store(store.flow_name, store.project, store.branch, store.storage, source=source)
