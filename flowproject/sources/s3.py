"""S3 source: watch one object or every object under a prefix, through boto3.

Check modes (``[data] check_mode``):

- ``files_metadata``: ``key`` is a folder prefix; the value is a digest of (key, size,
  last-modified, etag) of every object under it, recursively. A new, deleted or overwritten
  object anywhere below the prefix changes it. No object under the prefix is the absent state.
- ``file_size`` / ``file_modified_ts`` / ``etag``: ``key`` is one object; the value is its size,
  its last-modified time (ISO-8601) or its ETag (changes with the content even when size and
  time do not). A missing object is the absent state.

Credentials come from the standard AWS chain (environment, ``AWS_PROFILE``, instance role...);
``role`` assumes an IAM role on top. The endpoint follows ``AWS_ENDPOINT_URL_S3`` /
``AWS_ENDPOINT_URL`` (read by boto3 itself), then ``METAFLOW_S3_ENDPOINT_URL``.
"""

import fnmatch
import os
import tempfile
import time
from contextlib import contextmanager

from ..exceptions import SourceError
from .observation import Observation

TYPE = "s3"

CHECK_MODES = ("files_metadata", "file_size", "file_modified_ts", "etag")

CONFIG_SCHEMA = {
    "type": "object",
    "properties": {
        "type": {"const": "s3"},
        "bucket": {
            "type": "string",
            "pattern": "^s3://[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]/?$",
            "x-expected": "'s3://<bucket-name>' (3-63 lowercase letters, digits, '.', '-')",
        },
        "key": {"type": "string"},
        "check_mode": {"enum": list(CHECK_MODES)},
        "role": {
            "type": "string",
            "pattern": "^arn:aws[a-z-]*:iam::[0-9]{12}:role/.+$",
            "x-expected": "an IAM role ARN like 'arn:aws:iam::123456789012:role/name'",
        },
        "include": {"type": "array", "items": {"type": "string"}, "minItems": 1},
        "exclude": {"type": "array", "items": {"type": "string"}},
        "list_concurrency": {"type": "integer", "minimum": 1, "maximum": 64},
    },
    "required": ["type", "bucket", "key", "check_mode"],
    "additionalProperties": False,
}

# Progress is printed every this many listed objects, so a long listing shows it is alive.
PROGRESS_EVERY = 100_000


def validate(data):
    """Checks beyond the schema: key shape per check mode, filters only with a prefix."""
    problems = []
    mode = data.get("check_mode")
    key = data.get("key")
    if isinstance(key, str) and mode in CHECK_MODES:
        if mode == "files_metadata":
            if key.startswith("/"):
                problems.append(
                    "data.key: expected a prefix relative to the bucket (no leading '/'), "
                    "found %r" % key
                )
        else:
            if not key or key.endswith("/"):
                problems.append(
                    "data.key: check_mode %r watches one object, so key must name a file, "
                    "found %r (use check_mode = 'files_metadata' for a folder)" % (mode, key)
                )
    if mode in CHECK_MODES and mode != "files_metadata":
        for name in ("include", "exclude", "list_concurrency"):
            if name in data:
                problems.append(
                    "data.%s: only applies to check_mode 'files_metadata', found check_mode %r"
                    % (name, mode)
                )
    return problems


def normalize(data):
    """Bucket name without the scheme, folder prefixes ending in '/', default filters."""
    data = dict(data)
    data["bucket"] = data["bucket"][len("s3://") :].rstrip("/")
    if data["check_mode"] == "files_metadata":
        key = data["key"]
        # "data/events" must not also match "data/events_old/...": a folder ends with "/".
        data["key"] = key if (not key or key.endswith("/")) else key + "/"
        data.setdefault("include", [])
        data.setdefault("exclude", [])
        data.setdefault("list_concurrency", 1)
    return data


def describe(data):
    """``s3://bucket/key (mode)``: what this sensor watches."""
    return "s3://%s/%s (%s)" % (data["bucket"], data["key"], data["check_mode"])


# --------------------------------------------------------------------------------------
# Session: one boto3 client per check, with the role assumed when configured.
# --------------------------------------------------------------------------------------


def endpoint_url():
    """The S3 endpoint override, or None for AWS itself.

    boto3 reads ``AWS_ENDPOINT_URL_S3`` and ``AWS_ENDPOINT_URL`` itself; Metaflow's own
    ``METAFLOW_S3_ENDPOINT_URL`` is honoured when neither is set.
    """
    if os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL"):
        return None
    return os.environ.get("METAFLOW_S3_ENDPOINT_URL") or None


def make_client(role=None, max_pool_connections=10):
    """An S3 client from the standard credential chain, assuming ``role`` if given.

    Parameters
    ----------
    role : str, optional
        IAM role ARN to assume with STS before talking to S3.
    max_pool_connections : int
        HTTP connection pool size; raise it for concurrent listing.

    Returns
    -------
    botocore.client.S3
    """
    import boto3
    from botocore.config import Config as BotoConfig

    boto_config = BotoConfig(
        retries={"mode": "standard", "max_attempts": 5},
        max_pool_connections=max_pool_connections,
    )
    session = boto3.session.Session()
    if role:
        sts = session.client("sts", config=boto_config)
        try:
            creds = sts.assume_role(RoleArn=role, RoleSessionName="flowproject-sensor")[
                "Credentials"
            ]
        except Exception as e:
            raise SourceError("Could not assume role %s: %s" % (role, _error_text(e)))
        session = boto3.session.Session(
            aws_access_key_id=creds["AccessKeyId"],
            aws_secret_access_key=creds["SecretAccessKey"],
            aws_session_token=creds["SessionToken"],
        )
    return session.client("s3", endpoint_url=endpoint_url(), config=boto_config)


class S3Session(object):
    """Holds the S3 client of one check and what the check asked S3."""

    def __init__(self, data):
        self.data = data
        self.client = make_client(
            data.get("role"), max_pool_connections=max(10, data.get("list_concurrency", 1))
        )
        self.requests = []

    def record(self, what, seconds, **facts):
        self.requests.append({"request": what, "seconds": round(seconds, 4), **facts})

    def close(self):
        self.client.close()


@contextmanager
def open_session(data):
    """Open an S3 session for ``data`` (the normalized ``[data]`` table)."""
    session = S3Session(data)
    try:
        yield session
    finally:
        session.close()


# --------------------------------------------------------------------------------------
# Checks: plain functions, S3 state in, comparable value out.
# --------------------------------------------------------------------------------------


def _error_code(e):
    response = getattr(e, "response", None) or {}
    return str(response.get("Error", {}).get("Code", ""))


def _error_text(e):
    code = _error_code(e)
    return code if code else e.__class__.__name__


def _raise_for(e, data, what):
    code = _error_code(e)
    bucket = data["bucket"]
    if code in ("NoSuchBucket",):
        raise SourceError("Bucket 's3://%s' does not exist (while %s)." % (bucket, what))
    if code in ("AccessDenied", "403", "AllAccessDisabled", "InvalidAccessKeyId"):
        raise SourceError(
            "Access denied to s3://%s/%s (while %s): check the credentials and the "
            "bucket policy%s." % (bucket, data["key"], what, " and role" if data.get("role") else "")
        )
    raise SourceError(
        "S3 request failed for s3://%s/%s (while %s): %s"
        % (bucket, data["key"], what, _error_text(e))
    )


def head_object(session, data):
    """HEAD the configured object; None when it does not exist (the bucket must)."""
    from botocore.exceptions import BotoCoreError, ClientError

    client, bucket, key = session.client, data["bucket"], data["key"]
    started = time.monotonic()
    try:
        head = client.head_object(Bucket=bucket, Key=key)
    except ClientError as e:
        if _error_code(e) not in ("404", "NoSuchKey", "NotFound"):
            _raise_for(e, data, "reading the object's metadata")
        # HEAD answers 404 for a missing bucket too: tell the two apart.
        try:
            client.head_bucket(Bucket=bucket)
        except ClientError as be:
            if _error_code(be) in ("404", "NoSuchBucket", "NotFound"):
                raise SourceError("Bucket 's3://%s' does not exist." % bucket)
            _raise_for(be, data, "checking the bucket")
        session.record("HeadObject", time.monotonic() - started, found=False)
        return None
    except BotoCoreError as e:
        raise SourceError("Could not reach S3 for s3://%s/%s: %s" % (bucket, key, e))
    session.record("HeadObject", time.monotonic() - started, found=True)
    return head


def check_object(session, data):
    """Value of one object for ``file_size``, ``file_modified_ts`` or ``etag``."""
    head = head_object(session, data)
    if head is None:
        return Observation(None, {"state": "absent", "key": data["key"]})
    summary = {
        "state": "present",
        "key": data["key"],
        "size": head["ContentLength"],
        "last_modified": head["LastModified"].isoformat(),
        "etag": head["ETag"].strip('"'),
    }
    mode = data["check_mode"]
    if mode == "file_size":
        value = str(head["ContentLength"])
    elif mode == "file_modified_ts":
        value = summary["last_modified"]
    else:
        value = summary["etag"]
    return Observation(value, summary)


def key_matches(relative_key, include, exclude):
    """Whether an object passes the include/exclude globs.

    A pattern without '/' is matched against the file name (``_SUCCESS``, ``*.parquet``); a
    pattern with '/' against the key relative to the prefix (``dt=*/part-*``).
    """
    name = relative_key.rsplit("/", 1)[-1]

    def hit(pattern):
        return fnmatch.fnmatchcase(relative_key if "/" in pattern else name, pattern)

    if include and not any(hit(p) for p in include):
        return False
    return not any(hit(p) for p in exclude)


class ListingDigest(object):
    """An order-independent digest of a set of objects, built one object at a time.

    Each object's (key, size, last-modified, etag) is hashed on its own and the hashes are
    added modulo 2**256, so the digest of a prefix is the same whether its pages are read in
    order or its sub-prefixes concurrently (``merge``), and only one page is ever in memory.
    """

    MODULUS = 1 << 256

    def __init__(self):
        self.total = 0
        self.count = 0
        self.bytes = 0
        self.newest = None

    @staticmethod
    def line(relative_key, size, last_modified, etag):
        return "%s\t%d\t%s\t%s" % (relative_key, size, last_modified, etag)

    def add(self, relative_key, size, last_modified, etag):
        import hashlib

        line = self.line(relative_key, size, last_modified, etag)
        self.total = (
            self.total + int.from_bytes(hashlib.sha256(line.encode("utf-8")).digest(), "big")
        ) % self.MODULUS
        self.count += 1
        self.bytes += size
        if self.newest is None or last_modified > self.newest:
            self.newest = last_modified
        return line

    def merge(self, other):
        self.total = (self.total + other.total) % self.MODULUS
        self.count += other.count
        self.bytes += other.bytes
        if other.newest is not None and (self.newest is None or other.newest > self.newest):
            self.newest = other.newest
        return self

    def hexdigest(self):
        return "%064x" % self.total

    def value(self):
        """The comparable value; None (absent) when no object matched."""
        if self.count == 0:
            return None
        return "sha256:" + self.hexdigest()

    def summary(self):
        return {
            "state": "present" if self.count else "absent",
            "objects": self.count,
            "bytes": self.bytes,
            "newest": self.newest,
        }


def list_into(session, data, prefix, digest, spool, progress=None):
    """Stream ListObjectsV2 pages under ``prefix`` into ``digest`` (and ``spool``, a file).

    Returns the number of pages read.
    """
    from botocore.exceptions import BotoCoreError, ClientError

    root = data["key"]
    include, exclude = data.get("include", []), data.get("exclude", [])
    paginator = session.client.get_paginator("list_objects_v2")
    pages = 0
    try:
        for page in paginator.paginate(Bucket=data["bucket"], Prefix=prefix):
            pages += 1
            for obj in page.get("Contents", ()):
                relative = obj["Key"][len(root) :]
                if not key_matches(relative, include, exclude):
                    continue
                line = digest.add(
                    relative,
                    obj["Size"],
                    obj["LastModified"].isoformat(),
                    obj.get("ETag", "").strip('"'),
                )
                if spool is not None:
                    spool.write(line + "\n")
            if progress is not None:
                progress(pages, len(page.get("Contents", ())))
    except ClientError as e:
        _raise_for(e, data, "listing s3://%s/%s" % (data["bucket"], prefix))
    except BotoCoreError as e:
        raise SourceError("Could not reach S3 for s3://%s/%s: %s" % (data["bucket"], prefix, e))
    return pages


class Progress(object):
    """Prints a line every PROGRESS_EVERY objects: objects seen, pages, elapsed."""

    def __init__(self, label, every=PROGRESS_EVERY):
        self.label, self.every = label, every
        self.objects = self.pages = 0
        self.started = time.monotonic()
        self._next = every

    def __call__(self, pages_delta, objects_delta):
        self.pages += 1
        self.objects += objects_delta
        if self.objects >= self._next:
            self._next += self.every
            print(
                "listing %s: %d objects, %d pages, %.1fs"
                % (self.label, self.objects, self.pages, time.monotonic() - self.started),
                flush=True,
            )


def check_prefix(session, data, spool=None):
    """Value of every object under the prefix, for ``files_metadata``.

    Parameters
    ----------
    session : S3Session
    data : dict
        The normalized ``[data]`` table.
    spool : file, optional
        A text file receiving one line per object (what a diff needs); the caller keeps
        it only when a change is announced.
    """
    started = time.monotonic()
    digest = ListingDigest()
    progress = Progress("s3://%s/%s" % (data["bucket"], data["key"]))
    pages = list_into(session, data, data["key"], digest, spool, progress)
    session.record(
        "ListObjectsV2", time.monotonic() - started, pages=pages, objects=digest.count
    )
    summary = digest.summary()
    summary["pages"] = pages
    return Observation(digest.value(), summary)


def check(data, session):
    """Check the configured S3 object or prefix once.

    Parameters
    ----------
    data : dict
        The normalized ``[data]`` table.
    session : S3Session
        From ``open_session``.

    Returns
    -------
    Observation
        For ``files_metadata`` its ``detail`` is the path of a temporary file listing every
        object (deleted by the caller).
    """
    if data["check_mode"] != "files_metadata":
        return check_object(session, data)
    spool = tempfile.NamedTemporaryFile(
        "w", prefix="flowproject-listing-", suffix=".tsv", delete=False, encoding="utf-8"
    )
    try:
        with spool:
            observation = check_prefix(session, data, spool)
    except BaseException:
        os.unlink(spool.name)
        raise
    return Observation(observation.value, observation.summary, detail=spool.name)
