"""files_metadata listing at scale: concurrent listing gives exactly the sequential result.

Small data on the loopback moto server; ``PAGE_SIZE`` is lowered so a few dozen objects take
many pages and exercise the paging, first-page and sub-prefix paths of the concurrent listing.
"""

import os
import subprocess
import sys
import textwrap

import pytest
from conftest import use_loopback_s3

from flowproject.sources import s3

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Objects directly at the prefix root next to sub-prefixes, nested sub-sub-prefixes, names that
# sort just before and after a sub-prefix ("b.txt" < "b/..." < "b0", "b!x/" < "b-c/" < "b/"),
# a folder marker equal to the prefix, an empty path segment, and siblings outside the prefix.
LAYOUT = (
    ["data/", "data/a.txt", "data/b.txt", "data/b!x/1", "data/b-c/2", "data/b/x", "data/b0"]
    + ["data/b/y/z/deep-%d" % i for i in range(3)]
    + ["data/c/d/e/f", "data/z", "data//double", "data/m%02d.csv" % 0, "data/m%02d.csv" % 1]
    + ["data/p=%02d/part-%03d.parquet" % (i % 4, i) for i in range(40)]
    + ["data/p=01/_SUCCESS", "data/p=02/tmp/x.tmp", "data/zz/%d" % 1]
    + ["dat", "data_old/x", "datab/y", "other/data/q"]
)


@pytest.fixture
def s3_env(s3_server, monkeypatch):
    use_loopback_s3(monkeypatch, s3_server.endpoint_url)
    return s3_server


def put(client, bucket, keys):
    for i, key in enumerate(keys):
        client.put_object(Bucket=bucket, Key=key, Body=b"x" * (i % 7))


def run_check(bucket, key, **extra):
    data = {"type": "s3", "bucket": "s3://" + bucket, "key": key, "check_mode": "files_metadata"}
    data.update(extra)
    assert s3.validate(data) == []
    data = s3.normalize(data)
    with s3.open_session(data) as session:
        observation = s3.check(data, session)
        requests = list(session.requests)
    try:
        with open(observation.detail, encoding="utf-8") as f:
            lines = f.read().splitlines()
    finally:
        os.unlink(observation.detail)
    return observation, lines, requests


def sort_key(line):
    return line.rsplit("\t", 3)[0]


@pytest.mark.parametrize("page_size", [3, 1000])
def test_concurrent_listing_equals_sequential(s3_env, s3_client, bucket, monkeypatch, page_size):
    monkeypatch.setattr(s3, "PAGE_SIZE", page_size)
    put(s3_client, bucket, LAYOUT)
    sequential, lines, _ = run_check(bucket, "data", list_concurrency=1)
    expected = sorted(k[len("data/") :] for k in LAYOUT if k.startswith("data/"))
    assert [sort_key(line) for line in lines] == expected  # every object, in key order
    assert sequential.summary["objects"] == len(expected)
    for workers in (2, 8, 64):
        observation, concurrent_lines, _ = run_check(bucket, "data", list_concurrency=workers)
        assert observation.value == sequential.value
        assert observation.summary == dict(sequential.summary, pages=observation.summary["pages"])
        assert concurrent_lines == lines  # same lines, same (key) order


def random_layout(rng):
    """A random tree of keys under "r/": depths 0-3, names that sort around '/' and each other."""
    names = ["a", "b", "b0", "b-", "b.x", "p=1", "p=2", "z", "_S", "\u00e9t\u00e9"]
    keys = set()
    for _ in range(rng.randint(1, 30)):
        depth = rng.randint(0, 3)
        keys.add("r/" + "/".join(rng.choice(names) for _ in range(depth + 1)))
    return sorted(keys)


@pytest.mark.parametrize("seed", range(6))
def test_concurrent_listing_equals_sequential_on_random_trees(
    s3_env, s3_client, bucket, monkeypatch, seed
):
    import random

    rng = random.Random(seed)
    monkeypatch.setattr(s3, "PAGE_SIZE", rng.choice([1, 2, 3, 5]))
    put(s3_client, bucket, random_layout(rng))
    sequential, lines, _ = run_check(bucket, "r", list_concurrency=1)
    observation, concurrent_lines, _ = run_check(
        bucket, "r", list_concurrency=rng.choice([2, 3, 8])
    )
    assert observation.value == sequential.value
    assert concurrent_lines == lines


def test_concurrent_listing_uses_sub_prefixes(s3_env, s3_client, bucket, monkeypatch):
    """With the first page inside one sub-prefix, the rest is listed per sub-prefix."""
    monkeypatch.setattr(s3, "PAGE_SIZE", 4)
    keys = ["data/p=%02d/f-%03d" % (i // 10, i) for i in range(60)]  # 6 sub-prefixes of 10
    keys += ["data/top.txt", "data/p=03.txt"]
    put(s3_client, bucket, keys)
    sequential, lines, _ = run_check(bucket, "data/", list_concurrency=1)
    observation, concurrent_lines, requests = run_check(bucket, "data/", list_concurrency=4)
    assert observation.value == sequential.value
    assert concurrent_lines == lines
    assert requests[-1]["partitions"] == 6 and requests[-1]["concurrency"] == 4


def test_single_sub_prefix_is_explored_deeper(s3_env, s3_client, bucket, monkeypatch):
    monkeypatch.setattr(s3, "PAGE_SIZE", 3)
    keys = ["data/year=2024/month=%02d/f-%d" % (m, i) for m in range(1, 7) for i in range(4)]
    keys += ["data/year=2024/readme", "data/year=2024/month=03.bak"]
    put(s3_client, bucket, keys)
    sequential, lines, _ = run_check(bucket, "data", list_concurrency=1)
    observation, concurrent_lines, requests = run_check(bucket, "data", list_concurrency=8)
    assert observation.value == sequential.value
    assert concurrent_lines == lines
    assert requests[-1]["partitions"] >= 5  # the months, not the single year


def test_filters_apply_the_same_in_both_modes(s3_env, s3_client, bucket, monkeypatch):
    monkeypatch.setattr(s3, "PAGE_SIZE", 5)
    put(s3_client, bucket, LAYOUT)
    filters = {"include": ["*.parquet", "*.csv", "b/y/*/*"], "exclude": ["p=03/*", "*-001.*"]}
    sequential, lines, _ = run_check(bucket, "data", list_concurrency=1, **filters)
    unfiltered, _, _ = run_check(bucket, "data", list_concurrency=1)
    assert 0 < sequential.summary["objects"] < unfiltered.summary["objects"]
    assert all(
        s3.key_matches(sort_key(line), filters["include"], filters["exclude"]) for line in lines
    )
    for workers in (3, 8):
        observation, concurrent_lines, _ = run_check(
            bucket, "data", list_concurrency=workers, **filters
        )
        assert observation.value == sequential.value
        assert concurrent_lines == lines


def test_empty_prefix_is_absent_in_both_modes(s3_env, s3_client, bucket, monkeypatch):
    monkeypatch.setattr(s3, "PAGE_SIZE", 2)
    put(s3_client, bucket, ["datax/1", "dat", "other/data/1"])
    for workers in (1, 8):
        observation, lines, _ = run_check(bucket, "data", list_concurrency=workers)
        assert observation.value is None and observation.absent
        assert observation.summary["state"] == "absent" and observation.summary["objects"] == 0
        assert lines == []


def test_small_prefix_costs_one_request(s3_env, s3_client, bucket):
    put(s3_client, bucket, ["data/p=%d/f" % i for i in range(20)])
    observation, _, requests = run_check(bucket, "data")  # default concurrency
    assert observation.summary["objects"] == 20
    assert requests == [dict(requests[0], pages=1)] and "partitions" not in requests[0]


def test_progress_lines_with_concurrency(s3_env, s3_client, bucket, monkeypatch, capsys):
    monkeypatch.setattr(s3, "PAGE_SIZE", 3)
    monkeypatch.setattr(s3, "PROGRESS_EVERY", 10)
    put(s3_client, bucket, ["data/p=%d/f-%02d" % (i // 8, i) for i in range(40)])
    for workers in (1, 4):
        run_check(bucket, "data", list_concurrency=workers)
        out = capsys.readouterr().out
        progress = [line for line in out.splitlines() if line.startswith("listing s3://")]
        assert len(progress) >= 3, out
        assert "s3://%s/data/:" % bucket in progress[0]
        assert " objects, " in progress[0] and " pages, " in progress[0]
        counts = [int(line.split(": ")[1].split(" objects")[0]) for line in progress]
        assert counts == sorted(counts) and counts[-1] <= 40


def test_s3_path_imports_nothing_of_snowflake(s3_env, s3_client, bucket):
    put(s3_client, bucket, ["data/p=1/a", "data/p=2/b"])
    code = textwrap.dedent(
        """
        import os, sys
        import flowproject.sources.s3 as s3
        data = s3.normalize({"type": "s3", "bucket": "s3://%s", "key": "data",
                             "check_mode": "files_metadata"})
        with s3.open_session(data) as session:
            observation = s3.check(data, session)
        os.unlink(observation.detail)
        assert observation.summary["objects"] == 2, observation
        loaded = sorted(m for m in sys.modules if "snowflake" in m.lower())
        assert not loaded, loaded
        print("ok")
        """
        % bucket
    )
    env = dict(os.environ, PYTHONPATH=REPO)
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"
