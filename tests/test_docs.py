"""README.md and docs/*.md: links resolve, benchmark figures are those of bench/results.md,
and every block marked runnable runs as written against loopback stand-ins.

The conventions are described for contributors in docs/contributing.md ("How the docs are
tested", "Runnable blocks").
"""

import glob
import hashlib
import os
import re
import subprocess
import sys

import pytest
from conftest import REPO
from deployment import CLUSTER_SETTINGS
from test_examples import copy_repo

from flowproject.testing import sensor_env

DOCS = ["README.md"] + sorted(
    os.path.relpath(p, REPO) for p in glob.glob(os.path.join(REPO, "docs", "*.md"))
)
FIGURES_MARKER = "<!-- figures: bench/results.md -->"
RUNNABLE = re.compile(r"^<!-- runnable(?:: (?P<target>\S+))?(?: env=(?P<env>deploy))? -->$")
NOT_RUNNABLE = re.compile(r"^<!-- not runnable: \S.* -->$")
FENCE = re.compile(r"^(`{3,}|~{3,})")


def read(name):
    with open(os.path.join(REPO, name), encoding="utf-8") as f:
        return f.read()


def prose_lines(text):
    """(line number, line) of the lines outside fenced code blocks."""
    fence = None
    for number, line in enumerate(text.splitlines(), 1):
        match = FENCE.match(line.strip())
        if fence is None and match:
            fence = match.group(1)
        elif fence is not None and line.strip().startswith(fence):
            fence = None
        elif fence is None:
            yield number, line


def github_slug(heading):
    """The anchor GitHub gives a heading: lowercase, punctuation dropped, spaces to '-'."""
    text = re.sub(r"<[^>]+>", "", heading).strip().lower()
    text = re.sub(r"[^\w\- ]", "", text)  # \w keeps letters, digits and '_'
    return text.replace(" ", "-")


def anchors(name):
    found, seen = set(), {}
    for _, line in prose_lines(read(name)):
        match = re.match(r"^#{1,6}\s+(.*?)\s*#*\s*$", line)
        if match:
            slug = github_slug(match.group(1))
            count = seen.get(slug, 0)
            seen[slug] = count + 1
            found.add(slug if count == 0 else "%s-%d" % (slug, count))
    return found


def links(name):
    """(line number, target) of every Markdown link outside code."""
    for number, line in prose_lines(read(name)):
        line = re.sub(r"`[^`]*`", "", line)  # inline code is not a link
        for target in re.findall(r"\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)", line):
            yield number, target


def test_the_github_slugs_are_computed_as_github_does():
    assert github_slug("Removing a branch's deployments: `--teardown`") == (
        "removing-a-branchs-deployments---teardown"
    )
    assert github_slug("Waiting for several sources: `@sensor_trigger(sources=[...])`") == (
        "waiting-for-several-sources-sensor_triggersources"
    )
    assert (
        github_slug("Which `flowconfig.toml` a flow reads") == "which-flowconfigtoml-a-flow-reads"
    )


@pytest.mark.parametrize("name", DOCS)
def test_every_relative_link_and_anchor_resolves(name):
    broken = []
    for number, target in links(name):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target):  # http:, https:, mailto: not fetched
            continue
        path, _, anchor = target.partition("#")
        resolved = os.path.normpath(os.path.join(os.path.dirname(name), path)) if path else name
        if not os.path.exists(os.path.join(REPO, resolved)):
            broken.append("%s:%d: %s: no file %s" % (name, number, target, resolved))
        elif anchor and (not resolved.endswith(".md") or anchor not in anchors(resolved)):
            broken.append(
                "%s:%d: %s: no heading #%s in %s" % (name, number, target, anchor, resolved)
            )
    assert not broken, "\n".join(broken)


def test_the_readme_is_a_short_front_page_in_order():
    readme = read("README.md")
    assert len(readme.splitlines()) < 350
    sections = [line for _, line in prose_lines(readme) if line.startswith("## ")]
    assert sections == [
        "## Try it (no cloud account needed)",
        "## Your own bucket in five minutes",
        "## Configuration at a glance",
        "## Deploy",
        "## How it compares",
        "## Where to read more",
    ]
    assert "./scripts/demo    #" in readme and "./scripts/test    #" in readme


# ---------------------------------------------------------------------------- figures

FIGURE = re.compile(r"(?<![\w.])\d+(?:\.\d+)?(?:x| s| ms| MB| B)(?![\w])")


def marked_blocks(text, marker):
    """The lines after each ``marker`` line, up to the next blank line."""
    lines = text.splitlines()
    for i, line in enumerate(lines):
        if line.strip() == marker:
            block = []
            for following in lines[i + 1 :]:
                if not following.strip():
                    break
                block.append(following)
            yield block


@pytest.mark.parametrize("name", DOCS)
def test_benchmark_figures_are_those_of_bench_results(name):
    results = read("bench/results.md")
    result_lines = set(line.strip() for line in results.splitlines())
    wrong = []
    for block in marked_blocks(read(name), FIGURES_MARKER):
        assert block, "%s: a figures marker before nothing" % name
        for line in block:
            if line.startswith("|"):
                if line.strip() not in result_lines:
                    wrong.append("%s: row not in bench/results.md: %s" % (name, line))
            else:
                wrong += [
                    "%s: %r not in bench/results.md (%s)" % (name, figure, line.strip())
                    for figure in FIGURE.findall(line)
                    if figure not in results
                ]
    assert not wrong, "\n".join(wrong)


def test_the_readme_and_the_benchmarks_page_quote_bench_results():
    assert FIGURES_MARKER in read("README.md")
    assert read("docs/benchmarks.md").count(FIGURES_MARKER) >= 3


def test_every_ratio_on_the_front_page_is_one_of_bench_results():
    results = read("bench/results.md")
    ratios = re.findall(r"(?<![\w.])\d+(?:\.\d+)?x(?!\w)", read("README.md"))
    assert ratios and [r for r in ratios if r not in results] == []


def test_the_figures_check_catches_a_wrong_figure():
    results = read("bench/results.md")
    assert "1.10x" in results and FIGURE.findall("1.10x (1.29 s vs 9.99 s)")[-1] == "9.99 s"
    assert "9.99 s" not in results


# ---------------------------------------------------------------------------- runnable blocks


def fenced_blocks(text):
    """(marker, language, code) of each fenced block; marker is the HTML comment right before
    it (blank lines between allowed), or None."""
    lines = text.splitlines()
    i, marker = 0, None
    while i < len(lines):
        line = lines[i].strip()
        fence = FENCE.match(line)
        if not fence:
            if line.startswith("<!--"):
                marker = line
            elif line:
                marker = None
            i += 1
            continue
        language = line[len(fence.group(1)) :].strip()
        code = []
        i += 1
        while i < len(lines) and not lines[i].strip().startswith(fence.group(1)):
            code.append(lines[i])
            i += 1
        i += 1
        yield marker, language, "\n".join(code) + "\n"
        marker = None


def runnable_blocks(text):
    """(target, env, language, code) of each fenced block right after a runnable marker."""
    for marker, language, code in fenced_blocks(text):
        match = RUNNABLE.match(marker or "")
        if match:
            yield match.group("target"), match.group("env"), language, code


RUNNABLE_DOCS = [name for name in DOCS if list(runnable_blocks(read(name)))]
README_CONFIG = next(
    code for target, _, _, code in runnable_blocks(read("README.md")) if target == "flowconfig.toml"
)


def test_runnable_blocks_are_found_and_exclude_the_demo_and_the_suite():
    for name in ("README.md", "docs/sources.md", "docs/operations.md", "docs/deploy.md"):
        assert name in RUNNABLE_DOCS
    for name in DOCS:
        for target, _, language, code in runnable_blocks(read(name)):
            assert (target, language) in ((None, "bash"), ("flowconfig.toml", "toml")), name
            # The suite cannot run itself, and the demo has its own tests (test_demo.py).
            assert "scripts/test" not in code and "scripts/demo" not in code


def test_every_shell_block_of_the_readme_is_run_or_says_why_not():
    for marker, language, code in fenced_blocks(read("README.md")):
        if language in ("bash", "sh", "shell", "console"):
            assert RUNNABLE.match(marker or "") or NOT_RUNNABLE.match(marker or ""), (
                "README.md: mark this block <!-- runnable --> or <!-- not runnable: why -->:\n"
                + code
            )


def seed_bucket(s3_server):
    """What the runnable blocks watch: objects under s3://my-ml-data/events/, and a Delta
    table of two versions (0 and 1) at s3://my-ml-data/tables/events."""
    client = s3_server.client()
    client.create_bucket(Bucket="my-ml-data")
    for part in range(3):
        key = "events/dt=2026-01-01/part-%d.csv" % part
        client.put_object(Bucket="my-ml-data", Key=key, Body=b"a,b\n%d,2\n" % part)
    deltalake = pytest.importorskip("deltalake")
    pa = pytest.importorskip("pyarrow")
    from test_delta_source import storage_options

    for values in ([1, 2], [3]):
        deltalake.write_deltalake(
            "s3://my-ml-data/tables/events",
            pa.table({"a": values}),
            mode="append",
            storage_options=storage_options(s3_server),
        )


def deploy_env(env, root, s3_server):
    """What ``./deploy`` needs besides a cluster: a git checkout (the copy, on main), an S3
    datastore (the loopback server) and the Kubernetes / Argo Events settings, as in
    tests/test_deploy.py."""
    if not os.path.isdir(os.path.join(root, ".git")):
        git = ["git", "-c", "user.name=test", "-c", "user.email=test@example.com"]
        for args in (["init", "-q", "-b", "main"], ["add", "-A"], ["commit", "-q", "-m", "docs"]):
            subprocess.run(git + args, cwd=root, check=True, capture_output=True)
    s3_server.client().create_bucket(Bucket="deploy-docs")
    env = {k: v for k, v in env.items() if not k.startswith(("METAFLOW_DATASTORE", "GITHUB_"))}
    env.update(
        PYTHON=sys.executable,
        METAFLOW_DEFAULT_DATASTORE="s3",
        METAFLOW_DATASTORE_SYSROOT_S3="s3://deploy-docs/metaflow",
        METAFLOW_S3_ENDPOINT_URL=s3_server.endpoint_url,
        **CLUSTER_SETTINGS,
    )
    return env


def assert_setup_is_current(venv):
    """Fail unless ``venv`` was set up from this checkout's pyproject.toml and constraints.txt.

    The blocks run ``source scripts/setup`` in the test's copy of the repository, with this
    venv. Were its stamp stale (pyproject.toml edited, pytest run without scripts/test),
    that setup would reinstall flowproject into the venv from the copy, in editable mode:
    once pytest deletes the copy, ``import flowproject`` fails outside the checkout."""
    with open(os.path.join(REPO, "pyproject.toml"), "rb") as f:
        wanted = f.read()
    with open(os.path.join(REPO, "constraints.txt"), "rb") as f:
        wanted = hashlib.sha256(wanted + f.read()).hexdigest()
    stamp = os.path.join(venv, ".flowproject-installed")
    installed = open(stamp).read().strip() if os.path.exists(stamp) else None
    if installed != wanted:
        pytest.fail(
            "%s is not set up from this checkout's pyproject.toml and constraints.txt: run "
            "`source scripts/setup` (or ./scripts/test), then this test again. Run as it is, "
            "the README's `source scripts/setup` would reinstall it from the test's copy." % venv
        )


LEFT_BEHIND = [".metaflow", "deploy-out", "examples/.metaflow", "other.toml"]


def checkout_state():
    """What a block run in the checkout instead of the copy would leave or change there."""
    found = {name: os.path.exists(os.path.join(REPO, name)) for name in LEFT_BEHIND}
    found["flowconfig.toml"] = read("flowconfig.toml")
    return found


@pytest.mark.e2e
@pytest.mark.parametrize("name", RUNNABLE_DOCS)
def test_every_runnable_block_runs_as_written(name, tmp_path, s3_server, webhook):
    before = checkout_state()
    seed_bucket(s3_server)
    root = copy_repo(tmp_path / "repo")
    # The docs' commands are written against the README's example config (bucket my-ml-data),
    # never against the user's flowconfig.toml, which the copy brought along.
    with open(os.path.join(root, "flowconfig.toml"), "w") as f:
        f.write(README_CONFIG)
    (tmp_path / "tmp").mkdir()
    env = sensor_env(s3_server.endpoint_url, webhook.url, user="tester", workdir=root)
    env.update(
        FLOWPROJECT_VENV=os.path.join(REPO, ".venv"),  # `source scripts/setup` installs nothing
        PYTHONPATH=root,  # the copy's flowproject, also for the console scripts
        PATH=os.path.dirname(sys.executable) + os.pathsep + env["PATH"],
        TMPDIR=str(tmp_path / "tmp"),
        METAFLOW_HOME=str(tmp_path / "metaflow-home"),
    )
    if not os.path.exists(os.path.join(REPO, ".venv", "bin", "python")):
        env["FLOWPROJECT_VENV"] = os.path.dirname(os.path.dirname(sys.executable))
    assert_setup_is_current(env["FLOWPROJECT_VENV"])
    output = []
    for target, env_name, _, code in runnable_blocks(read(name)):
        if target:
            with open(os.path.join(root, target), "w") as f:
                f.write(code)
            continue
        result = subprocess.run(
            ["bash", "-e", "-o", "pipefail", "-c", code],
            cwd=root,
            env=deploy_env(env, root, s3_server) if env_name == "deploy" else env,
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert result.returncode == 0, "%s: block failed:\n%s\n%s%s" % (
            name,
            code,
            result.stdout[-4000:],
            result.stderr[-4000:],
        )
        output.append(result.stdout + result.stderr)
    out = "\n".join(output)
    if name == "README.md":
        assert "Dry run: would publish mfns.churn_model.user.tester.data_updated" in out
        assert "done: 1 check(s), 1 triggered run(s), all succeeded" in out
        assert os.path.exists(os.path.join(root, "deploy-out", "sensorflow.json"))
    if name == "docs/operations.md":
        assert "Reset SensorFlow branch user.tester of project churn_model" in out
    if name == "docs/deploy.md":
        assert re.search(r"compiled: \S*deploy-out/sensorflow\.json", out), out[-3000:]
    if name == "docs/sources.md":
        assert re.search(r"Read 3 rows of version 1 ", out), out[-3000:]
    assert checkout_state() == before  # nothing left behind in the checkout
