"""A loopback moto S3 server for the benchmark, seeded in-process and with a fast listing.

    python bench/moto_server.py PORT SEED_SPEC_JSON

moto's own ListObjectsV2 scans and sorts the whole bucket and runs a generic serializer on every
request (~0.8 ms per listed key here), and each PutObject over HTTP costs ~14 ms: a 100,000-key
listing would take minutes and seeding 111,000 objects half an hour. So this script, in the
moto server's own process:

- seeds the objects straight into moto's S3 backend (~0.1 ms each);
- replaces ``S3Response.list_objects_v2`` by a bisect over a sorted key index and a hand-written
  XML body (same elements as S3: Contents, CommonPrefixes, continuation tokens, StartAfter with
  S3's roll-up semantics), so the server is no longer the bottleneck and the client's own cost
  (what the benchmark compares) dominates.

Every other request (PutObject, HeadObject, ...) is moto's unmodified code. SEED_SPEC_JSON is a
list of ``{"bucket": ..., "prefix": ..., "count": N, "partitions": P}``: N objects spread
round-robin over P sub-prefixes ``part=XX/``; or ``{"bucket": ..., "prefix": ...,
"directory": PATH}``: the files of a local folder (a Delta table written by ``deltalake``). An
item with ``"when": PATH`` is seeded later, once the file PATH exists; then ``PATH.done`` is
written (100,000 objects added between two checks, bench/downstream_bench.py).
"""

import base64
import bisect
import json
import sys
import threading
from xml.sax.saxutils import escape

ACCOUNT = "123456789012"


def _backend():
    from moto.backends import get_backend

    return get_backend("s3")[ACCOUNT]["aws"]


_index_lock = threading.Lock()
_index = {}  # bucket name -> (key count when built, sorted names)


def _sorted_names(bucket):
    size = len(bucket.keys)
    with _index_lock:
        cached = _index.get(bucket.name)
        if cached is None or cached[0] != size:
            cached = (size, sorted(bucket.keys.keys()))
            _index[bucket.name] = cached
        return cached[1]


def _token(kind, text):
    return base64.urlsafe_b64encode(json.dumps([kind, text]).encode("utf-8")).decode("ascii")


def _untoken(token):
    return json.loads(base64.urlsafe_b64decode(token.encode("ascii")).decode("utf-8"))


def _after_all_with(prefix):
    """The smallest string greater than every string starting with ``prefix``."""
    return prefix[:-1] + chr(ord(prefix[-1]) + 1)


def fast_list_objects_v2(self):
    q = self.querystring
    bucket = self.backend.get_bucket(self.bucket_name)
    prefix = q.get("prefix", [""])[0] or ""
    if isinstance(prefix, bytes):
        prefix = prefix.decode("utf-8")
    delimiter = q.get("delimiter", [None])[0]
    token = q.get("continuation-token", [None])[0]
    start_after = q.get("start-after", [None])[0]
    max_keys = int(q.get("max-keys", ["1000"])[0])
    names = _sorted_names(bucket)
    pos = bisect.bisect_left(names, prefix)
    if start_after:
        pos = max(pos, bisect.bisect_right(names, start_after))
    if token:
        kind, text = _untoken(token)
        pos = max(
            pos,
            bisect.bisect_left(names, text) if kind == "ge" else bisect.bisect_right(names, text),
        )
    contents, folders = [], []
    last = None
    truncated = False
    n = len(names)
    while pos < n:
        name = names[pos]
        if not name.startswith(prefix):
            break
        if len(contents) + len(folders) >= max_keys:
            truncated = True
            break
        rest = name[len(prefix) :]
        if delimiter and delimiter in rest:
            folder = prefix + rest.split(delimiter, 1)[0] + delimiter
            folders.append(folder)
            nxt = _after_all_with(folder)
            last = ("ge", nxt)
            pos = bisect.bisect_left(names, nxt, pos)
            continue
        key = bucket.keys[name]
        contents.append(
            "<Contents><Key>%s</Key><LastModified>%s</LastModified><ETag>%s</ETag>"
            "<Size>%d</Size><StorageClass>STANDARD</StorageClass></Contents>"
            % (escape(name), key.last_modified_ISO8601, escape(key.etag), key.size)
        )
        last = ("gt", name)
        pos += 1
    parts = [
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        '<ListBucketResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/">',
        "<Name>%s</Name><Prefix>%s</Prefix><MaxKeys>%d</MaxKeys><KeyCount>%d</KeyCount>"
        % (escape(bucket.name), escape(prefix), max_keys, len(contents) + len(folders)),
        "<IsTruncated>%s</IsTruncated>" % ("true" if truncated else "false"),
    ]
    if delimiter:
        parts.append("<Delimiter>%s</Delimiter>" % escape(delimiter))
    if token:
        parts.append("<ContinuationToken>%s</ContinuationToken>" % token)
    elif start_after:
        parts.append("<StartAfter>%s</StartAfter>" % escape(start_after))
    if truncated:
        parts.append("<NextContinuationToken>%s</NextContinuationToken>" % _token(*last))
    parts.extend(contents)
    parts.extend(
        "<CommonPrefixes><Prefix>%s</Prefix></CommonPrefixes>" % escape(f) for f in folders
    )
    parts.append("</ListBucketResult>")
    return 200, {"Content-Type": "application/xml"}, "".join(parts)


def seed(spec):
    backend = _backend()
    total = 0
    for item in spec:
        try:
            backend.create_bucket(item["bucket"], "us-east-1")
        except Exception:
            pass  # already there
        if "directory" in item:
            total += seed_directory(backend, item)
            continue
        parts = item.get("partitions", 0)
        for i in range(item["count"]):
            folder = "part=%02d/" % (i % parts) if parts else ""
            key = "%s%sobj-%06d.parquet" % (item["prefix"], folder, i)
            backend.put_object(item["bucket"], key, b"x" * (i % 97))
            total += 1
    return total


def seed_directory(backend, item):
    """Every file under ``item["directory"]`` (a table written locally), at its relative path
    under ``item["prefix"]``."""
    import os

    root, total = item["directory"], 0
    for folder, _dirs, files in os.walk(root):
        for name in sorted(files):
            path = os.path.join(folder, name)
            key = item["prefix"] + os.path.relpath(path, root).replace(os.sep, "/")
            with open(path, "rb") as f:
                backend.put_object(item["bucket"], key, f.read())
            total += 1
    return total


def seed_when(item):
    """Seed ``item`` once the file ``item["when"]`` exists; then write ``<when>.done``."""
    import os
    import time

    while not os.path.exists(item["when"]):
        time.sleep(0.1)
    seed([item])
    with _index_lock:
        _index.pop(item["bucket"], None)  # the sorted key index is built again
    with open(item["when"] + ".done", "w") as f:
        f.write("seeded\n")


def main():
    import time

    from moto.s3.responses import S3Response
    from moto.server import ThreadedMotoServer

    port = int(sys.argv[1])
    spec = json.loads(sys.argv[2]) if len(sys.argv) > 2 else []
    S3Response.list_objects_v2 = fast_list_objects_v2
    started = time.monotonic()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    later = [item for item in spec if "when" in item]
    spec = [item for item in spec if "when" not in item]
    for item in later:
        threading.Thread(target=seed_when, args=(item,), daemon=True).start()
    count = seed(spec)
    print("seeded %d objects in %.1fs" % (count, time.monotonic() - started), flush=True)
    # Build the sorted indexes now, not during the first timed listing.
    for item in spec:
        _sorted_names(_backend().get_bucket(item["bucket"]))
    print("ready", flush=True)
    threading.Event().wait()


if __name__ == "__main__":
    main()
