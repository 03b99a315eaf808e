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
import re
import shutil
import tempfile
import threading
import time
from contextlib import contextmanager

from ..exceptions import SourceError
from .observation import Observation

TYPE = "s3"

# What a step checking S3 imports, for ``--environment=pypi`` / ``conda``.
PACKAGES = {"boto3": ">=1.34"}

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

# Keys per ListObjectsV2 request (S3's maximum); lowered by tests to exercise paging.
PAGE_SIZE = 1000

# Sub-prefixes listed at once when ``list_concurrency`` is not set (see list_concurrently).
DEFAULT_LIST_CONCURRENCY = 8


# S3's naming rules for general purpose buckets beyond the characters and length the schema
# checks (https://docs.aws.amazon.com/AmazonS3/latest/userguide/bucketnamingrules.html).
BUCKET_RESERVED_PREFIXES = ("xn--", "sthree-", "amzn-s3-demo-")
BUCKET_RESERVED_SUFFIXES = ("-s3alias", "--ol-s3", ".mrap", "--x-s3", "--table-s3")
_IP_ADDRESS_RE = re.compile(r"^\d{1,3}(\.\d{1,3}){3}$")


def bucket_name_problems(bucket):
    """Why S3 would refuse ``bucket`` (``s3://name``) as a bucket name; [] when it would not."""
    name = bucket[len("s3://") :].rstrip("/") if bucket.startswith("s3://") else bucket
    reserved_prefixes, reserved_suffixes = BUCKET_RESERVED_PREFIXES, BUCKET_RESERVED_SUFFIXES
    reasons = []
    if ".." in name:
        reasons.append("two adjacent periods")
    if _IP_ADDRESS_RE.match(name):
        reasons.append("the form of an IP address")
    reasons += ["the reserved prefix %r" % p for p in reserved_prefixes if name.startswith(p)]
    reasons += ["the reserved suffix %r" % s for s in reserved_suffixes if name.endswith(s)]
    return [
        "data.bucket: %r is not a valid S3 bucket name: it has %s" % (bucket, reason)
        for reason in reasons
    ]


def validate(data):
    """Checks beyond the schema: bucket naming rules, key shape per check mode, filters only
    with a prefix."""
    problems = []
    if isinstance(data.get("bucket"), str):
        problems += bucket_name_problems(data["bucket"])
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
        data.setdefault("list_concurrency", DEFAULT_LIST_CONCURRENCY)
    return data


def describe(data):
    """``s3://bucket/key (mode)``: what this sensor watches."""
    return "s3://%s/%s (%s)" % (data["bucket"], data["key"], data["check_mode"])


def endpoint_host(env=None):
    """Host name of the S3 endpoint the sensor reads (``s3.amazonaws.com`` for AWS itself)."""
    from urllib.parse import urlsplit

    env = os.environ if env is None else env
    for name in ("AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL", "METAFLOW_S3_ENDPOINT_URL"):
        if env.get(name):
            return (urlsplit(env[name]).hostname or env[name]).lower()
    return "s3.amazonaws.com"


def identity(data, env=None):
    """What the value depends on: endpoint host, bucket, key, mode and filters.

    A stored baseline of another identity is not compared with (``sensor.decide``). The role,
    the concurrency and the endpoint's port change how the data is read, not what it is.
    """
    found = {
        "type": TYPE,
        "endpoint": endpoint_host(env),
        "bucket": data["bucket"],
        "key": data["key"],
        "check_mode": data["check_mode"],
    }
    if data["check_mode"] == "files_metadata":
        # Filters match a key if any pattern does: their order does not change the value.
        found["include"] = sorted(data.get("include") or [])
        found["exclude"] = sorted(data.get("exclude") or [])
    return found


def absent_message(data):
    """What an absent observation means, for people: ``no objects under s3://b/k``."""
    where = "s3://%s/%s" % (data["bucket"], data["key"])
    if data["check_mode"] != "files_metadata":
        return "no object at %s" % where
    filters = [
        "%s %s" % (name, ", ".join(data[name])) for name in ("include", "exclude") if data.get(name)
    ]
    return "no objects under %s%s" % (where, " (%s)" % "; ".join(filters) if filters else "")


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


def parse_timestamp(value):
    """Timestamps of S3 responses, as botocore's own parser reads them, but ~20x faster.

    A listing carries one ``LastModified`` per object ('2024-05-01T12:00:00.000Z'), and
    botocore's default parser (dateutil) spends more time on it than on the rest of the page.
    ISO-8601 values are read with ``datetime.fromisoformat``; anything else (HTTP dates of
    HEAD responses, epoch numbers) goes to botocore's parser. Both give the same UTC datetime,
    so ``isoformat()``, the digest and every value are unchanged.
    """
    from datetime import datetime

    if isinstance(value, str) and len(value) >= 20 and value[10:11] == "T":
        text = value[:-1] + "+00:00" if value.endswith("Z") else value
        try:
            parsed = datetime.fromisoformat(text)
        except ValueError:
            parsed = None
        if parsed is not None and parsed.tzinfo is not None:
            return parsed
    from botocore.utils import parse_timestamp as botocore_parse_timestamp

    return botocore_parse_timestamp(value)


_shared_session = None  # (process id and AWS_* environment it was made for, session)
_session_lock = threading.Lock()


def _botocore_session():
    """A botocore session whose clients parse response timestamps with ``parse_timestamp``."""
    import botocore.session

    session = botocore.session.get_session()
    try:
        session.get_component("response_parser_factory").set_parser_defaults(
            timestamp_parser=parse_timestamp
        )
    except Exception:  # an older/newer botocore without the hook: keep its own parser
        pass
    return session


def _create_client(service, **kwargs):
    """A client of the process's one boto3 session.

    One session per process: a new one loads and parses the S3 service model again (about a
    quarter of a second of CPU), which a sensor checking 20 prefixes would pay 20 times. A
    session is not thread-safe, so clients are created under a lock; clients themselves are.
    A session caches the credentials it resolved, so a changed ``AWS_*`` environment (or a
    forked process) gets a new one.
    """
    global _shared_session
    import boto3

    made_for = (os.getpid(), sorted(kv for kv in os.environ.items() if kv[0].startswith("AWS_")))
    with _session_lock:
        if _shared_session is None or _shared_session[0] != made_for:
            session = boto3.session.Session(botocore_session=_botocore_session())
            _shared_session = (made_for, session)
        return _shared_session[1].client(service, **kwargs)


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
    from botocore.config import Config as BotoConfig

    boto_config = BotoConfig(
        retries={"mode": "standard", "max_attempts": 5},
        max_pool_connections=max_pool_connections,
    )
    credentials = {}
    if role:
        sts = _create_client("sts", config=boto_config)
        try:
            creds = sts.assume_role(RoleArn=role, RoleSessionName="flowproject-sensor")[
                "Credentials"
            ]
        except Exception as e:
            raise SourceError("Could not assume role %s: %s" % (role, _error_text(e))) from None
        # Given to this client only: the shared session keeps the standard credential chain.
        credentials = {
            "aws_access_key_id": creds["AccessKeyId"],
            "aws_secret_access_key": creds["SecretAccessKey"],
            "aws_session_token": creds["SessionToken"],
        }
    return _create_client("s3", endpoint_url=endpoint_url(), config=boto_config, **credentials)


class S3Session(object):
    """Holds the S3 client of one check and what the check asked S3."""

    def __init__(self, data):
        self.data = data
        self.client = make_client(
            data.get("role"),
            max_pool_connections=max(10, data.get("list_concurrency", DEFAULT_LIST_CONCURRENCY)),
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
            "bucket policy%s."
            % (bucket, data["key"], what, " and role" if data.get("role") else "")
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
                raise SourceError("Bucket 's3://%s' does not exist." % bucket) from None
            _raise_for(be, data, "checking the bucket")
        session.record("HeadObject", time.monotonic() - started, found=False)
        return None
    except BotoCoreError as e:
        raise SourceError("Could not reach S3 for s3://%s/%s: %s" % (bucket, key, e)) from None
    session.record("HeadObject", time.monotonic() - started, found=True)
    return head


def check_object(session, data):
    """Value of one object for ``file_size``, ``file_modified_ts`` or ``etag``."""
    head = head_object(session, data)
    if head is None:
        return Observation(None, {"state": "absent", "key": data["key"]})
    last_modified, etag = head.get("LastModified"), head.get("ETag")
    summary = {
        "state": "present",
        "key": data["key"],
        "size": head.get("ContentLength"),
        "last_modified": None if last_modified is None else last_modified.isoformat(),
        "etag": None if etag is None else etag.strip('"'),
    }
    mode = data["check_mode"]
    field, header = {
        "file_size": ("size", "Content-Length"),
        "file_modified_ts": ("last_modified", "Last-Modified"),
        "etag": ("etag", "ETag"),
    }[mode]
    value = summary[field]
    if value is None or value == "":
        # A store or proxy that answers HEAD without the header: no value to compare, and
        # "absent" would be a change that never happened.
        raise SourceError(
            "HEAD s3://%s/%s answered without a %s header, which check_mode %r compares; "
            "the store (or a proxy in front of it) is not answering as S3 does"
            % (data["bucket"], data["key"], header, mode)
        )
    return Observation(str(value), summary)


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


def page_problem(page, delimiter=None):
    """What makes ``page`` not a well-formed ListObjectsV2 answer, or None if it is one.

    A page that is not understood must never pass for the last page of a listing: an empty
    200 from an S3-compatible store or a proxy would otherwise end the listing early, and the
    digest of a partial listing would announce a change that did not happen (and then another
    one back). S3 always sends ``IsTruncated`` and ``KeyCount``, and ``KeyCount`` counts the
    objects of the page plus, with a delimiter, its common prefixes.

    Parameters
    ----------
    page : dict
        A ``list_objects_v2`` response as botocore parsed it.
    delimiter : str, optional
        The ``Delimiter`` of the request.
    """
    fields = [name for name in page if name != "ResponseMetadata"]
    if not fields:
        return "an empty body (HTTP 200 without a ListObjectsV2 result)"
    missing = [name for name in ("IsTruncated", "KeyCount") if name not in page]
    if missing:
        return "an answer without %s" % " or ".join(missing)
    listed = len(page.get("Contents", ()))
    what = "%d objects" % listed
    if delimiter:
        prefixes = len(page.get("CommonPrefixes", ()))
        listed += prefixes
        what += " and %d common prefixes" % prefixes
    if page["KeyCount"] != listed:
        return "KeyCount %s, but the page holds %s" % (page["KeyCount"], what)
    if page["IsTruncated"] and not page.get("NextContinuationToken"):
        return "a truncated page without a NextContinuationToken"
    return None


def _list_page(session, data, **kwargs):
    """One ListObjectsV2 request, with S3 errors and malformed pages turned into
    ``SourceError``."""
    from botocore.exceptions import BotoCoreError, ClientError

    bucket, prefix = data["bucket"], kwargs.get("Prefix", "")
    try:
        page = session.client.list_objects_v2(Bucket=bucket, MaxKeys=PAGE_SIZE, **kwargs)
    except ClientError as e:
        _raise_for(e, data, "listing s3://%s/%s" % (bucket, prefix))
    except BotoCoreError as e:
        raise SourceError("Could not reach S3 for s3://%s/%s: %s" % (bucket, prefix, e)) from None
    # An answer that is not XML at all botocore retries, then reports as a ClientError.
    problem = page_problem(page, kwargs.get("Delimiter"))
    if problem:
        raise SourceError(
            "S3 answered the listing of s3://%s/%s with %s: not a well-formed ListObjectsV2 "
            "page, so the listing cannot be trusted and this check stops (the baseline is kept)."
            % (bucket, prefix, problem)
        )
    return page


def _pages(session, data, prefix, delimiter=None, start_after=None, token=None):
    """Yield the ListObjectsV2 pages under ``prefix``, one request (1,000 keys) at a time."""
    kwargs = {"Prefix": prefix}
    if delimiter:
        kwargs["Delimiter"] = delimiter
    if start_after:
        kwargs["StartAfter"] = start_after
    while True:
        if token:
            kwargs["ContinuationToken"] = token
        page = _list_page(session, data, **kwargs)
        yield page
        if not page["IsTruncated"]:
            return
        token = page["NextContinuationToken"]  # _list_page refused a truncated page without it


def _add_objects(data, objects, digest, spool, after=None):
    """Add listed objects (dicts of a ListObjectsV2 page) passing the filters; returns how many
    objects were looked at. Objects with keys ``<= after`` are skipped (already listed)."""
    root = data["key"]
    include, exclude = data.get("include", []), data.get("exclude", [])
    seen = 0
    for obj in objects:
        key = obj["Key"]
        if after is not None and key <= after:
            continue
        seen += 1
        relative = key[len(root) :]
        if (include or exclude) and not key_matches(relative, include, exclude):
            continue
        line = digest.add(
            relative, obj["Size"], obj["LastModified"].isoformat(), obj.get("ETag", "").strip('"')
        )
        if spool is not None:
            spool.write(line + "\n")
    return seen


def list_into(session, data, prefix, digest, spool, progress=None, start_after=None, token=None):
    """Stream ListObjectsV2 pages under ``prefix`` into ``digest`` (and ``spool``, a file).

    Listing starts after the key ``start_after`` or at the continuation ``token`` when given.
    Returns the number of pages read.
    """
    pages = 0
    for page in _pages(session, data, prefix, start_after=start_after, token=token):
        pages += 1
        seen = _add_objects(data, page.get("Contents", ()), digest, spool)
        if progress is not None:
            progress(1, seen)
    return pages


class Progress(object):
    """Prints a line every PROGRESS_EVERY objects: objects seen, pages, elapsed.

    Thread-safe: the workers of a concurrent listing share one.
    """

    def __init__(self, label, every=None):
        self.label = label
        self.every = every or PROGRESS_EVERY
        self.objects = self.pages = 0
        self.started = time.monotonic()
        self._next = self.every
        self._lock = threading.Lock()

    def __call__(self, pages_delta, objects_delta):
        with self._lock:
            self.pages += pages_delta
            self.objects += objects_delta
            if self.objects < self._next:
                return
            while self._next <= self.objects:
                self._next += self.every
            line = "listing %s: %d objects, %d pages, %.1fs" % (
                self.label,
                self.objects,
                self.pages,
                time.monotonic() - self.started,
            )
        print(line, flush=True)


# --------------------------------------------------------------------------------------
# Concurrent listing: the same objects, the same digest, the same spool, sooner.
#
# 1. The first page is listed as the sequential listing would (one request for a prefix of up
#    to 1,000 objects, so small prefixes cost nothing more). ``last`` is its last key.
# 2. If it was truncated, a delimiter listing (Delimiter='/', StartAfter=last) of the prefix
#    gives its direct objects (added at once) and its sub-prefixes; while there is only one
#    sub-prefix, it is explored the same way (up to MAX_DESCENT levels).
# 3. Every sub-prefix is listed by a bounded pool of threads sharing the session's client, each
#    into its own digest and spool segment. The digests are summed (order-independent) and the
#    segments concatenated in key order, so digest and spool equal the sequential ones exactly.
#
# Keys <= last were listed by the first page and are skipped everywhere; the sub-prefix that
# holds ``last`` is listed from ``last`` on. When page one already spans many sub-prefixes
# (they hold few objects each, so one request per sub-prefix would cost more than it saves),
# the listing simply continues sequentially.
# --------------------------------------------------------------------------------------

MAX_DESCENT = 3


class _Run(object):
    """A run of direct objects between two sub-prefixes: its digest and spool segment."""

    def __init__(self, folder):
        self.digest = ListingDigest()
        self.path = None
        self.file = None
        if folder is not None:
            fd, self.path = tempfile.mkstemp(prefix="run-", suffix=".tsv", dir=folder)
            self.file = os.fdopen(fd, "w", encoding="utf-8")

    def close(self):
        if self.file is not None:
            self.file.close()
            self.file = None


def _child_prefix(prefix, key):
    """The direct sub-prefix of ``prefix`` holding ``key``, or None if ``key`` is directly in it."""
    if not key.startswith(prefix):
        return None
    rest = key[len(prefix) :]
    if "/" not in rest:
        return None
    return prefix + rest.split("/", 1)[0] + "/"


def _explore(session, data, prefix, last, folder, progress, depth=0):
    """Delimiter-list ``prefix``: returns (items in key order, pages read).

    Items are ``_Run`` objects (direct objects, already digested) and sub-prefix strings (still
    to list). Everything at or before ``last`` is left out.
    """
    import heapq

    items = []
    pages = 0
    holding_last = _child_prefix(prefix, last)
    if holding_last is not None:
        # Listed from ``last`` on; S3 may or may not return it when StartAfter falls inside it.
        items.append(holding_last)
    run = None
    start_after = last if last > prefix else None
    try:
        for page in _pages(session, data, prefix, delimiter="/", start_after=start_after):
            pages += 1
            seen = 0
            objects = ((o["Key"], o) for o in page.get("Contents", ()))
            folders = ((p["Prefix"], None) for p in page.get("CommonPrefixes", ()))
            for key, obj in heapq.merge(objects, folders, key=lambda item: item[0]):
                if key <= last:
                    continue  # listed by the first page (a sub-prefix <= last is wholly before it)
                if obj is None:
                    if key != holding_last:
                        if run is not None:
                            run.close()
                            run = None
                        items.append(key)
                    continue
                if run is None:
                    run = _Run(folder)
                    items.append(run)
                seen += _add_objects(data, (obj,), run.digest, run.file)
            progress(1, seen)
    finally:
        if run is not None:
            run.close()
    sub_prefixes = [item for item in items if isinstance(item, str)]
    if len(sub_prefixes) == 1 and depth < MAX_DESCENT:
        # One sub-prefix holds (nearly) everything: look one level further for partitions.
        only = sub_prefixes[0]
        deeper, more = _explore(session, data, only, last, folder, progress, depth + 1)
        index = items.index(only)
        items[index : index + 1] = deeper
        pages += more
    return items, pages


def _list_segment(session, data, prefix, last, folder, progress):
    """List one sub-prefix (after ``last`` if it holds it) into a fresh digest and segment."""
    digest = ListingDigest()
    segment = _Run(folder)
    segment.digest = digest
    try:
        start_after = last if last.startswith(prefix) else None
        pages = list_into(session, data, prefix, digest, segment.file, progress, start_after)
    finally:
        segment.close()
    return segment, pages


def _spreads_thin(objects, prefix, workers):
    """Whether one page of keys spans so many sub-prefixes that listing each one on its own
    (one request each at least) would cost more requests than it saves."""
    seen = set()
    for obj in objects:
        child = _child_prefix(prefix, obj["Key"])
        if child is not None:
            seen.add(child)
    return len(seen) - 1 >= workers


def list_concurrently(session, data, digest, spool, progress, workers):
    """List the prefix with up to ``workers`` concurrent requests; returns (pages, partitions).

    ``digest`` and ``spool`` end up exactly as ``list_into`` leaves them (same digest, same
    lines in the same key order).
    """
    from concurrent.futures import ThreadPoolExecutor

    root = data["key"]
    first = _list_page(session, data, Prefix=root)
    objects = first.get("Contents", ())
    progress(1, _add_objects(data, objects, digest, spool))
    if not first.get("IsTruncated"):
        return 1, 0
    if _spreads_thin(objects, root, workers):
        token = first.get("NextContinuationToken")
        return 1 + list_into(session, data, root, digest, spool, progress, token=token), 0
    last = objects[-1]["Key"]
    folder = None
    if spool is not None:
        folder = tempfile.mkdtemp(
            prefix="flowproject-segments-", dir=os.path.dirname(os.path.abspath(spool.name))
        )
    try:
        items, pages = _explore(session, data, root, last, folder, progress)
        pages += 1
        partitions = [item for item in items if isinstance(item, str)]
        results = {}
        if partitions:
            pool = ThreadPoolExecutor(max_workers=min(workers, len(partitions)))
            try:
                futures = {
                    prefix: pool.submit(
                        _list_segment, session, data, prefix, last, folder, progress
                    )
                    for prefix in partitions
                }
                for prefix, future in futures.items():
                    results[prefix] = future.result()
            finally:
                pool.shutdown(wait=True, cancel_futures=True)
        for item in items:
            if isinstance(item, str):
                item, more = results[item]
                pages += more
            digest.merge(item.digest)
            if spool is not None:
                with open(item.path, encoding="utf-8") as segment:
                    shutil.copyfileobj(segment, spool, 1 << 20)
        return pages, len(partitions)
    finally:
        if folder is not None:
            shutil.rmtree(folder, ignore_errors=True)


def check_prefix(session, data, spool=None):
    """Value of every object under the prefix, for ``files_metadata``.

    Parameters
    ----------
    session : S3Session
    data : dict
        The normalized ``[data]`` table.
    spool : file, optional
        A text file receiving one line per object, in key order (what a diff needs); the
        caller keeps it only when a change is announced.
    """
    started = time.monotonic()
    digest = ListingDigest()
    progress = Progress("s3://%s/%s" % (data["bucket"], data["key"]))
    workers = data.get("list_concurrency", DEFAULT_LIST_CONCURRENCY)
    if workers > 1:
        pages, partitions = list_concurrently(session, data, digest, spool, progress, workers)
    else:
        pages, partitions = list_into(session, data, data["key"], digest, spool, progress), 0
    facts = {"pages": pages, "objects": digest.count}
    if partitions:
        facts.update(partitions=partitions, concurrency=workers)
    session.record("ListObjectsV2", time.monotonic() - started, **facts)
    summary = digest.summary()
    summary["pages"] = pages
    return Observation(digest.value(), summary)


def check(data, session, cursor=None):
    """Check the configured S3 object or prefix once.

    Parameters
    ----------
    data : dict
        The normalized ``[data]`` table.
    session : S3Session
        From ``open_session``.
    cursor : dict, optional
        Unused: every check lists the prefix (or HEADs the object) in full.

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
