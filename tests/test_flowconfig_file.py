"""The repository's flowconfig.toml: the only tests that read it.

Every other test builds its own config (``flowproject.testing`` / ``tests/conftest.py``), so
the suite passes whatever a user has put in flowconfig.toml (CI runs it with
tests/data/customised_flowconfig.toml in its place). Here:

- the flowconfig.toml in the working tree, whatever it holds, must be valid: a failure names
  each wrong key;
- the shipped one (``git show HEAD:flowconfig.toml``) must be valid, keep its documented
  defaults, and its commented several-sources example must be valid once uncommented.
"""

import os
import subprocess

import pytest
from conftest import REPO

from flowproject import FlowConfigError, configured_sources, load_flowconfig, parse_flowconfig


def _problems(load, source):
    """The problems ``load(source)`` reports, one per wrong key; [] when it is valid."""
    try:
        load(source)
    except FlowConfigError as e:
        return list(e.problems)
    return []


def test_the_flowconfig_in_the_working_tree_is_valid():
    path = os.path.join(REPO, "flowconfig.toml")
    problems = _problems(load_flowconfig, path)
    assert not problems, "%s is invalid:\n%s" % (path, "\n".join(problems))


@pytest.fixture(scope="module")
def shipped_text():
    """flowconfig.toml as committed (the shipped file), not as edited in the working tree."""
    proc = subprocess.run(
        ["git", "show", "HEAD:flowconfig.toml"], cwd=REPO, capture_output=True, text=True
    )
    if proc.returncode != 0:
        pytest.skip("not a git checkout: %s" % proc.stderr.strip())
    return proc.stdout


def test_the_shipped_flowconfig_is_valid(shipped_text):
    problems = _problems(parse_flowconfig, shipped_text)
    assert not problems, "HEAD:flowconfig.toml is invalid:\n%s" % "\n".join(problems)
    config = parse_flowconfig(shipped_text)
    assert config["data"]["type"] == "s3"
    assert config["sensor"]["settle_checks"] == 0
    assert config["sensor"]["namespaced_events"] is True


def test_the_shipped_flowconfig_shows_a_valid_multi_source_example(shipped_text):
    text = shipped_text
    example = text[text.index("# [sources.events]") :]
    uncommented = "\n".join(line[2:] for line in example.splitlines() if line.startswith("# "))
    head = text[: text.index("[data]")] + '[sensor]\ncron_schedule = "@hourly"\n'
    sources = configured_sources(parse_flowconfig(head + uncommented))
    assert [(w.name, w.data["type"]) for w in sources] == [
        ("events", "s3"),
        ("orders", "snowflake"),
    ]


def test_the_customised_config_ci_swaps_in_is_valid():
    config = load_flowconfig(os.path.join(REPO, "tests", "data", "customised_flowconfig.toml"))
    assert config["project_name"] != "flowproject"
    assert len(configured_sources(config)) > 1
