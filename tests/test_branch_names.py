"""Git branch -> Metaflow ``@project`` branch (``deploy_support.branch_name``), as properties.

Random git branch names (``/``, ``_``, ``-``, ``.``, uppercase, unicode, long names, names of
the hashed form ``..._1a2b3c`` and other branches' Metaflow names): no two distinct names map to
one Metaflow branch, and every result is a branch Metaflow accepts. Derandomized and bounded:
the same examples on every run, in a few seconds.
"""

import os
import re
import string
import subprocess
import sys

import pytest
from conftest import REPO
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from flowproject.deploy_support import (
    BRANCH_HASH_LEN,
    BRANCH_MAX_LEN,
    PRODUCTION_BRANCHES,
    branch_name,
    project_args,
)

PROPERTY = settings(
    derandomize=True,
    database=None,  # nothing written beside the tests
    max_examples=250,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)

VALID = re.compile(r"^[a-z0-9]+(_[a-z0-9]+)*$")
HEX = "0123456789abcdef"

# Characters of git branch names: no whitespace or control characters (git refuses them).
_ASCII = string.ascii_letters + string.digits + "/_-.@+#"
_UNICODE = "éÉßİıKΣσ字ñÅ\u00e5\u212a\u0301"
characters = st.one_of(
    st.sampled_from(_ASCII),
    st.sampled_from(_UNICODE),
    st.characters(blacklist_categories=("Cc", "Cs", "Zs", "Zl", "Zp")),
)
plain_names = st.text(characters, min_size=1, max_size=30)
long_names = st.text(characters, min_size=BRANCH_MAX_LEN - 8, max_size=3 * BRANCH_MAX_LEN)
# Already-valid names ending like a hashed one, some at the length limit.
hashed_forms = st.builds(
    lambda stem, digits: "%s_%s" % (stem, digits),
    st.from_regex(r"[a-z0-9]{1,20}(_[a-z0-9]{1,12}){0,2}", fullmatch=True).map(
        lambda s: s[: BRANCH_MAX_LEN - BRANCH_HASH_LEN - 1].rstrip("_")
    ),
    st.text(st.sampled_from(HEX), min_size=BRANCH_HASH_LEN, max_size=BRANCH_HASH_LEN),
)
git_names = st.one_of(plain_names, long_names, hashed_forms).filter(
    lambda n: n.strip() == n and not n.startswith("refs/heads/")
)


def _usable(name):
    """Whether ``name`` has anything a Metaflow branch can be made of."""
    return bool(re.search(r"[a-z0-9]", name.lower()))


def _neighbours(name):
    """Names a collision would most likely come from: the Metaflow name itself used as a
    git branch, other spellings of the same words, the same name shortened or extended."""
    options = [name.lower(), name.upper(), name.swapcase(), name + "x", name[:-1] or "x"]
    for old, new in [("/", "_"), ("-", "_"), ("_", "-"), (".", "_"), ("_", "/")]:
        options.append(name.replace(old, new))
    if _usable(name):
        options.append(branch_name(name))
    return [o for o in options if o.strip() == o and not o.startswith("refs/heads/")]


@st.composite
def name_pairs(draw):
    first = draw(git_names.filter(_usable))
    options = _neighbours(first)
    if options and draw(st.booleans()):
        return first, options[draw(st.integers(0, len(options) - 1))]
    return first, draw(git_names)


@PROPERTY
@given(name_pairs())
def test_two_distinct_git_branches_never_share_a_metaflow_branch(pair):
    first, second = pair
    if first == second or not _usable(second):
        return
    assert branch_name(first) != branch_name(second), pair


@settings(PROPERTY, max_examples=100)
@given(st.lists(git_names.filter(_usable), min_size=2, max_size=40, unique=True))
def test_a_set_of_git_branches_maps_to_as_many_metaflow_branches(names):
    mapped = {}
    for name in names:
        mapped.setdefault(branch_name(name), []).append(name)
    shared = {k: v for k, v in mapped.items() if len(v) > 1}
    assert shared == {}


@PROPERTY
@given(st.one_of(git_names, st.sampled_from(_neighbours("feature/Model-A"))))
def test_every_result_is_a_metaflow_branch_and_valid_names_stay_as_they_are(name):
    from metaflow.plugins.project_decorator import format_name

    if not _usable(name):
        with pytest.raises(ValueError):
            branch_name(name)
        return
    result = branch_name(name)
    assert VALID.match(result) and len(result) <= BRANCH_MAX_LEN, result
    # Metaflow's own check of --branch raises on anything it does not accept.
    assert format_name("F", "proj", False, result, "u")[1] == "test." + result
    assert branch_name(name) == result  # stable: a branch always deploys to one place
    hashed_form = re.search(r"_[0-9a-f]{%d}$" % BRANCH_HASH_LEN, name)
    if VALID.match(name) and len(name) <= BRANCH_MAX_LEN and not hashed_form:
        assert result == name  # existing deployments keep their branch
    else:
        assert re.search(r"_[0-9a-f]{%d}$" % BRANCH_HASH_LEN, result), result
    if name not in PRODUCTION_BRANCHES:
        assert project_args(name) == ["--branch", result]


@pytest.mark.parametrize(
    "git_branch, other",
    [
        # issue 18 #5: a branch named like another's hashed Metaflow name.
        ("feature_x_217d2b", "feature/x"),
        ("x" * 33 + "_d929cd", "x" * 80),  # the 40-character truncated + hash form
        ("release_202611", None),
    ],
)
def test_a_branch_named_like_a_hashed_name_is_hashed_too(git_branch, other):
    result = branch_name(git_branch)
    assert result != git_branch
    assert re.search(r"_[0-9a-f]{%d}$" % BRANCH_HASH_LEN, result)
    if other is not None:
        assert branch_name(other) == git_branch  # the name it would have collided with
        assert result != branch_name(other)


def test_the_deploy_helpers_branch_rules_import_no_metaflow():
    """./deploy asks ``python -m flowproject.deploy_support`` for the @project options of the
    git branch: name rules only, so that process never imports Metaflow (0.3 s of CPU)."""
    argv = [sys.executable, "-X", "importtime", "-m", "flowproject.deploy_support"]
    proc = subprocess.run(
        argv + ["project-args", "feature/Model-A"],
        cwd=REPO,
        env=dict(os.environ, PYTHONPATH=REPO),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["--branch", "feature_model_a_dce9b4"]
    imported = [
        line.rsplit("|", 1)[1].strip()
        for line in proc.stderr.splitlines()
        if line.startswith("import time:")
    ]
    assert "flowproject" in imported  # the package; the module itself runs as __main__
    assert [name for name in imported if name.split(".")[0] == "metaflow"] == []
