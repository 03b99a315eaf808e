"""The flows under examples/ run as the docs say: from the repository root, with the
repository's flowconfig.toml (none lies next to them), and against a loopback S3 endpoint
without any variable the docs do not name."""

import os
import shutil
import subprocess
import sys
import types

import pytest
from conftest import REPO, s3_config

from flowproject.testing import sensor_env


def copy_repo(dest):
    """The repository's tracked and new (not ignored) files, copied to ``dest``."""
    listed = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    for name in filter(None, listed.split("\0")):
        source = os.path.join(REPO, name)
        if not os.path.isfile(source):
            continue  # deleted in the work tree
        target = os.path.join(str(dest), name)
        os.makedirs(os.path.dirname(target), exist_ok=True)
        shutil.copy2(source, target)
    return str(dest)


def run(argv, cwd, env, timeout=300):
    return subprocess.run(
        [sys.executable] + argv,
        cwd=str(cwd),
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.fixture
def repo_copy(tmp_path):
    """A copy of the repository whose root flowconfig.toml is the test's own (one [data]
    source), never the user's: the examples are written for a single-source config."""
    root = copy_repo(tmp_path / "repo")
    with open(os.path.join(root, "flowconfig.toml"), "w") as f:
        f.write(s3_config("my-ml-data", "events/", "files_metadata"))
    return root


def test_an_example_flow_reads_the_repositorys_flowconfig(repo_copy, tmp_path):
    assert not os.path.exists(os.path.join(repo_copy, "examples", "flowconfig.toml"))
    env = sensor_env(workdir=str(tmp_path), user="tester")
    env["PYTHONPATH"] = REPO + os.pathsep + env.get("PYTHONPATH", "")
    for cwd in (repo_copy, tmp_path):  # from the root, and from anywhere else
        flow = os.path.join(repo_copy, "examples", "table_version_flow.py")
        result = run([flow, "show"], cwd, env)
        assert result.returncode == 0, result.stdout + result.stderr
        assert "Step start" in result.stdout + result.stderr


def test_a_flowconfig_next_to_the_flow_wins_over_the_repositorys(repo_copy, tmp_path):
    with open(os.path.join(repo_copy, "examples", "flowconfig.toml"), "w") as f:
        f.write('project_name = "Not Valid"\n')
    env = sensor_env(workdir=str(tmp_path), user="tester")
    env["PYTHONPATH"] = REPO + os.pathsep + env.get("PYTHONPATH", "")
    result = run(["examples/table_version_flow.py", "show"], repo_copy, env)
    assert result.returncode != 0
    assert "project_name" in result.stdout + result.stderr


@pytest.mark.e2e
def test_the_table_version_example_reads_a_delta_table_on_loopback_s3(
    repo_copy, tmp_path, s3_server, bucket
):
    """The example reads exactly the announced version (1), not the latest (2)."""
    pytest.importorskip("deltalake")
    from test_delta_source import Table, config_text

    table = Table(s3_server, "s3://%s/tables/events" % bucket)
    table.write([1, 2])
    table.write([3])  # version 1: three rows
    table.write([4, 5, 6, 7])  # version 2, written after the announcement: not read
    with open(os.path.join(repo_copy, "flowconfig.toml"), "w") as f:
        f.write(config_text(table.uri))
    announced = "1@%s" % table.open().metadata().id
    # What a user has for a local S3 endpoint: AWS_ENDPOINT_URL_S3 and keys, no AWS_ALLOW_HTTP.
    env = sensor_env(s3_server.endpoint_url, user="tester", workdir=str(tmp_path))
    env = {k: v for k, v in env.items() if k not in ("AWS_ALLOW_HTTP", "AWS_ENDPOINT_URL")}
    env["PYTHONPATH"] = REPO + os.pathsep + env.get("PYTHONPATH", "")
    result = run(
        ["examples/table_version_flow.py", "run", "--data_version", announced], repo_copy, env
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Read 3 rows of version %s" % announced in result.stdout


def test_the_table_example_reads_the_added_files_of_a_partitioned_table_with_their_columns(
    tmp_path,
):
    """The example's incremental Delta read without change data feed: only the data files the
    range added, each read in the calling thread, with the table's columns: the partition
    value (kept in the path, not in the file) and a column added after the older file."""
    deltalake = pytest.importorskip("deltalake")
    import pyarrow as pa

    sys.path.insert(0, os.path.join(REPO, "examples"))
    try:
        from table_version_flow import read_new_delta_rows
    finally:
        sys.path.remove(os.path.join(REPO, "examples"))

    uri = str(tmp_path / "events")
    deltalake.write_deltalake(uri, pa.table({"a": [1, 2], "day": ["d1", "d1"]}), partition_by="day")
    deltalake.write_deltalake(uri, pa.table({"a": [3], "day": ["d2"]}), mode="append")
    deltalake.write_deltalake(
        uri,
        pa.table({"a": [4], "day": ["d2"], "b": ["new"]}),
        mode="append",
        schema_mode="merge",
    )
    table = deltalake.DeltaTable(uri)
    first_files = set(deltalake.DeltaTable(uri, version=0).file_uris())
    added = [f for f in table.file_uris() if f not in first_files]

    class Changes(list):  # as sensor_changes(): the range, then each change of the manifest
        versions = (0, 2)

    changes = Changes(
        types.SimpleNamespace(kind="added", key=os.path.relpath(f, uri)) for f in added
    )
    rows = read_new_delta_rows(uri, changes)
    got = sorted(rows.select(["a", "day", "b"]).to_pylist(), key=lambda r: r["a"])
    assert got == [{"a": 3, "day": "d2", "b": None}, {"a": 4, "day": "d2", "b": "new"}]
