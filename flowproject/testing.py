"""Loopback stand-ins for the outside world, for tests, the demo and the benchmark.

- ``MotoS3Server``: moto's S3-compatible server in a subprocess on 127.0.0.1;
- ``WebhookReceiver``: an Argo Events webhook that records every event it receives, and can
  be told to fail (HTTP 500), redirect, hang, trickle, or go away (connection refused);
- ``FaultyS3Proxy``: a proxy in front of an S3 server that spoils chosen ListObjectsV2 answers;
- ``sensor_env``: the environment variables that point a flow run at them;
- ``check_once``: one sensor check as plain function calls, for fast tests of a config.

Every server binds a free port on 127.0.0.1 and is stopped by ``stop()`` or by leaving its
``with`` block.
"""

import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

LOOPBACK = "127.0.0.1"


def free_port():
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((LOOPBACK, 0))
        return s.getsockname()[1]


def wait_for_http(url, timeout=30.0, process=None):
    """Wait until ``url`` answers any HTTP status; raise if it does not in time."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError("server exited with code %s before answering" % process.returncode)
        try:
            urllib.request.urlopen(url, timeout=2)
            return
        except urllib.error.HTTPError:
            return
        except Exception as e:  # not listening yet
            last = e
            time.sleep(0.1)
    raise RuntimeError("%s did not answer within %.0fs: %s" % (url, timeout, last))


class ServerProcess(object):
    """A server started as a subprocess, stopped on exit (also on Ctrl-C or failure)."""

    def __init__(self, argv, url, log_path=None, env=None):
        self.argv, self.url = argv, url
        self.log_path = log_path
        self.env = env
        self.process = None
        self._log = None

    def start(self, timeout=60.0):
        self._log = open(self.log_path, "ab") if self.log_path else subprocess.DEVNULL
        self.process = subprocess.Popen(
            self.argv,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env=self.env,
            start_new_session=True,
        )
        try:
            wait_for_http(self.url, timeout=timeout, process=self.process)
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self):
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if self._log not in (None, subprocess.DEVNULL):
            self._log.close()
        self.process = None

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()


def _console_script(name):
    """Path of a console script installed next to the running Python, else on PATH."""
    candidate = os.path.join(os.path.dirname(sys.executable), name)
    if os.path.exists(candidate):
        return candidate
    found = shutil.which(name)
    if not found:
        raise RuntimeError("%s is not installed (pip install -e '.[dev]')" % name)
    return found


# moto's server (``moto_server``), with one change: it finds the service of every request by
# listing its own package folder (a listdir and a stat for each of ~190 services), a third of the
# CPU of a simple GET or PUT. The folder does not change while it runs, so it is listed once.
_MOTO_SERVER_MAIN = """
import sys
from moto import backends
services = tuple(backends.list_of_moto_modules())
backends.list_of_moto_modules = lambda: iter(services)
from moto.server import main
sys.exit(main())
"""


class MotoS3Server(ServerProcess):
    """moto's server mode: a real S3 HTTP endpoint on 127.0.0.1."""

    def __init__(self, port=None, log_path=None):
        import importlib.util

        if importlib.util.find_spec("moto") is None:
            raise RuntimeError("moto is not installed (pip install -e '.[dev]')")
        port = port or free_port()
        self.port = port
        super().__init__(
            [sys.executable, "-c", _MOTO_SERVER_MAIN, "-H", LOOPBACK, "-p", str(port)],
            "http://%s:%d/moto-api/" % (LOOPBACK, port),
            log_path=log_path,
        )
        self.endpoint_url = "http://%s:%d" % (LOOPBACK, port)

    def client(self):
        """A boto3 S3 client for this server (test credentials)."""
        import boto3

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint_url,
            region_name="us-east-1",
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
        )

    def reset(self):
        """Forget every bucket and object."""
        req = urllib.request.Request(self.endpoint_url + "/moto-api/reset", method="POST")
        urllib.request.urlopen(req, timeout=10).read()


class LoopbackHTTPServer(object):
    """An HTTP server on 127.0.0.1 in a background thread of this process.

    Subclasses implement ``handler()``, returning the ``BaseHTTPRequestHandler`` class.
    """

    def __init__(self, port=None):
        self.port = port or free_port()
        self._server = None

    def handler(self):
        raise NotImplementedError

    def start(self):
        self._server = ThreadingHTTPServer((LOOPBACK, self.port), self.handler())
        self._server.daemon_threads = True
        # A short poll interval: stop() waits for the next poll (0.5 s by default).
        threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        ).start()
        return self

    def stop(self):
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()


class WebhookReceiver(LoopbackHTTPServer):
    """An Argo Events webhook on 127.0.0.1 that records the events it receives.

    ``events`` is the list of JSON bodies received (``{"name": ..., "payload": {...}}``) with
    a 2xx answer; ``requests`` records every request (``method``, ``path``, ``headers``,
    ``body`` bytes), whatever the answer. How it answers a POST:

    - ``fail_with = 500``: that status (counted in ``rejected``, not recorded as an event);
      with ``fail_times = N`` only the next N posts fail (``fail_with`` or 500), then both
      are reset and it accepts;
    - ``redirect_to = URL``: a redirect (``redirect_status``, 302 by default) to ``URL``;
    - ``hang = True``: reads the request and never answers (until ``stop()``);
    - ``trickle = N``: sends a 200 answer one byte every N seconds (not counted in ``events``);
    - ``fail_events = {event name: status}``: that status for events of that name only (the
      webhook down for one sensor source's event), the others accepted;
    - ``stop()``: refuses connections.
    """

    def __init__(self, port=None):
        super().__init__(port)
        self.url = "http://%s:%d/" % (LOOPBACK, self.port)
        self.events = []
        self.requests = []
        self.rejected = 0
        self.fail_with = None
        self.fail_times = None
        self.redirect_to = None
        self.redirect_status = 302
        self.hang = False
        self.trickle = None
        self.fail_events = {}
        self._lock = threading.Lock()
        self._stopping = threading.Event()

    def start(self):
        self._stopping.clear()
        return super().start()

    def stop(self):
        self._stopping.set()  # releases hanging and trickling answers
        super().stop()

    def handler(self):
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def record(self):
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                with receiver._lock:
                    receiver.requests.append(
                        {
                            "method": self.command,
                            "path": self.path,
                            "headers": dict(self.headers.items()),
                            "body": body,
                        }
                    )
                return body

            def do_POST(self):
                body = self.record()
                if receiver.hang:
                    receiver._stopping.wait()
                    self.close_connection = True
                    return
                if receiver.trickle:
                    self.send_trickle(receiver.trickle)
                    return
                if receiver.redirect_to:
                    self.send_response(receiver.redirect_status)
                    self.send_header("Location", receiver.redirect_to)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                with receiver._lock:
                    status = receiver.fail_with
                    if receiver.fail_events:
                        try:
                            name = json.loads(body.decode("utf-8")).get("name")
                        except ValueError:
                            name = None
                        status = receiver.fail_events.get(name, status)
                    if receiver.fail_times:
                        status = status or 500
                        receiver.fail_times -= 1
                        if receiver.fail_times <= 0:  # the last failure: accept from now on
                            receiver.fail_times = receiver.fail_with = None
                    if status:
                        receiver.rejected += 1
                    else:
                        receiver.events.append(json.loads(body.decode("utf-8")))
                self.send_response(status or 200)
                self.end_headers()
                self.wfile.write(b"{}" if not status else b"failing on purpose")

            def send_trickle(self, seconds):
                answer = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}"
                for i in range(len(answer)):
                    if receiver._stopping.wait(seconds):
                        break
                    try:
                        self.wfile.write(answer[i : i + 1])
                        self.wfile.flush()
                    except OSError:
                        break
                self.close_connection = True

            def do_GET(self):
                self.record()
                self.send_response(200)
                self.end_headers()
                self.wfile.write(json.dumps(receiver.events).encode("utf-8"))

            def log_message(self, *args):
                pass

        return Handler

    def clear(self):
        with self._lock:
            self.events.clear()
            self.requests.clear()
            self.rejected = 0


class FaultyS3Proxy(LoopbackHTTPServer):
    """A loopback HTTP proxy in front of an S3 server that can spoil ListObjectsV2 answers.

    Clients use ``endpoint_url`` instead of the server's; every request is forwarded as it
    came. ``inject(fault)`` rewrites the next ListObjectsV2 answer (or a later one, or several)
    the way a misbehaving S3-compatible store or proxy would, with a 200 status:

    - ``"empty_body"``: no body at all;
    - ``"cut_body"``: the first half of the XML;
    - ``"no_is_truncated"`` / ``"no_key_count"``: that element left out;
    - ``"wrong_key_count"``: ``KeyCount`` one more than the page holds;
    - ``"truncated_without_token"``: ``IsTruncated`` true and no ``NextContinuationToken``.

    ``listings`` counts the ListObjectsV2 answers forwarded, ``spoiled`` those rewritten, so a
    test can tell the fault was met. ``deny(bucket)`` answers every request for that bucket
    with S3's 403 ``AccessDenied`` (a bucket policy or role that stopped allowing the sensor),
    ``stall(bucket)`` never answers them (a store that hangs), until ``allow(bucket)``.
    ``head_without = {"ETag", ...}`` leaves those headers out of HEAD answers, and
    ``latency = seconds`` makes every request wait that long before it is forwarded (a slow
    store, or a long way to it; requests made at once wait at once).

    Parameters
    ----------
    upstream : str
        The S3 server's endpoint, e.g. ``MotoS3Server.endpoint_url``.
    port : int, optional
        Port to listen on; a free one by default.
    """

    FAULTS = (
        "empty_body",
        "cut_body",
        "no_is_truncated",
        "no_key_count",
        "wrong_key_count",
        "truncated_without_token",
    )

    def __init__(self, upstream, port=None):
        super().__init__(port)
        from urllib.parse import urlsplit

        parts = urlsplit(upstream)
        self.upstream = (parts.hostname, parts.port or 80)
        self.endpoint_url = "http://%s:%d" % (LOOPBACK, self.port)
        self.spoiled = 0
        self.listings = 0
        self._fault = None
        self._denied = set()
        self._stalled = set()
        self._released = threading.Event()
        self.head_without = set()
        self.latency = 0.0
        self._lock = threading.Lock()

    def deny(self, bucket):
        """Answer every request for ``bucket`` with 403 AccessDenied, as S3 does."""
        with self._lock:
            self._denied.add(bucket)

    def stall(self, bucket):
        """Never answer requests for ``bucket`` (until ``allow``, ``clear`` or ``stop``)."""
        with self._lock:
            self._stalled.add(bucket)
            self._released.clear()

    def allow(self, bucket):
        """Forward requests for ``bucket`` again (stalled ones are dropped unanswered)."""
        with self._lock:
            self._denied.discard(bucket)
            if bucket in self._stalled:
                self._stalled.discard(bucket)
                self._released.set()

    def stop(self):
        self._released.set()
        super().stop()

    def _bucket_of(self, path, host):
        """The bucket of a request, path-style or virtual-host style."""
        bucket = path.partition("?")[0].lstrip("/").partition("/")[0]
        return {bucket, host.partition(".")[0]}

    def _is_denied(self, path, host):
        with self._lock:
            return bool(self._bucket_of(path, host) & self._denied)

    def _is_stalled(self, path, host):
        with self._lock:
            return bool(self._bucket_of(path, host) & self._stalled)

    def inject(self, fault, nth=1, times=1):
        """Spoil ListObjectsV2 answers from the ``nth`` one on (1 = the next), ``times`` of
        them (None: every one) with ``fault``, one of ``FAULTS``."""
        if fault not in self.FAULTS:
            raise ValueError("unknown fault %r; expected one of %s" % (fault, self.FAULTS))
        with self._lock:
            self._fault = {"fault": fault, "skip": nth - 1, "left": times}
            self.spoiled = 0

    def clear(self):
        """Forward every answer unchanged and at once again (no fault, no denied or stalled
        bucket, no latency), and count from zero."""
        with self._lock:
            self._fault = None
            self._denied.clear()
            self._stalled.clear()
            self._released.set()
            self.head_without = set()
            self.latency = 0.0
            self.listings = self.spoiled = 0

    def _fault_for(self, method, path):
        """The fault to apply to this request's answer, or None (and count the listing)."""
        if method != "GET" or "list-type=2" not in path.partition("?")[2]:
            return None
        with self._lock:
            self.listings += 1
            plan = self._fault
            if plan is None:
                return None
            if plan["skip"] > 0:
                plan["skip"] -= 1
                return None
            if plan["left"] is not None:
                if plan["left"] <= 0:
                    return None
                plan["left"] -= 1
            self.spoiled += 1
            return plan["fault"]

    @staticmethod
    def spoil(body, fault):
        """``body``, a ListObjectsV2 XML answer, rewritten as ``fault`` says."""
        import re

        if fault == "empty_body":
            return b""
        if fault == "cut_body":
            return body[: len(body) // 2]
        if fault == "no_is_truncated":
            return re.sub(rb"<IsTruncated>[^<]*</IsTruncated>", b"", body)
        if fault == "no_key_count":
            return re.sub(rb"<KeyCount>[^<]*</KeyCount>", b"", body)
        if fault == "wrong_key_count":
            return re.sub(
                rb"<KeyCount>([0-9]+)</KeyCount>",
                lambda m: b"<KeyCount>%d</KeyCount>" % (int(m.group(1)) + 1),
                body,
            )
        body = re.sub(rb"<NextContinuationToken>[^<]*</NextContinuationToken>", b"", body)
        return re.sub(
            rb"<IsTruncated>[^<]*</IsTruncated>", b"<IsTruncated>true</IsTruncated>", body
        )

    def handler(self):
        import http.client

        proxy = self
        hop_by_hop = {"connection", "keep-alive", "transfer-encoding", "content-length"}

        class Handler(BaseHTTPRequestHandler):
            def _read_body(self):
                if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                    chunks = []
                    while True:
                        size = int(self.rfile.readline().split(b";")[0].strip(), 16)
                        if size == 0:
                            while self.rfile.readline().strip():
                                pass  # trailers
                            return b"".join(chunks)
                        chunks.append(self.rfile.read(size))
                        self.rfile.readline()
                return self.rfile.read(int(self.headers.get("Content-Length") or 0))

            def _forward(self):
                body = self._read_body()
                if proxy.latency:
                    time.sleep(proxy.latency)
                if proxy._is_stalled(self.path, self.headers.get("Host", "")):
                    proxy._released.wait()
                    self.close_connection = True
                    return
                if proxy._is_denied(self.path, self.headers.get("Host", "")):
                    denied = (
                        b'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>AccessDenied'
                        b"</Code><Message>Access Denied</Message></Error>"
                    )
                    self.send_response(403)
                    self.send_header("Content-Type", "application/xml")
                    self.send_header("Content-Length", str(len(denied)))
                    self.end_headers()
                    if self.command != "HEAD":
                        self.wfile.write(denied)
                    return
                headers = {k: v for k, v in self.headers.items() if k.lower() not in hop_by_hop}
                connection = http.client.HTTPConnection(*proxy.upstream, timeout=60)
                try:
                    connection.request(self.command, self.path, body=body, headers=headers)
                    answer = connection.getresponse()
                    payload = answer.read()
                    status, answer_headers = answer.status, answer.getheaders()
                finally:
                    connection.close()
                fault = proxy._fault_for(self.command, self.path) if status == 200 else None
                length = dict((k.lower(), v) for k, v in answer_headers).get("content-length")
                if fault is not None:
                    payload = proxy.spoil(payload, fault)
                if self.command != "HEAD":
                    length = str(len(payload))
                dropped = set()
                if self.command == "HEAD":
                    dropped = {name.lower() for name in proxy.head_without}
                self.send_response(status)
                for name, value in answer_headers:
                    if name.lower() not in hop_by_hop | dropped:
                        self.send_header(name, value)
                if length is not None and "content-length" not in dropped:
                    self.send_header("Content-Length", length)
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(payload)

            do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _forward

            def log_message(self, *args):
                pass

        return Handler


def check_once(
    config, state=None, flow_name="SensorFlow", branch="user.test", force=False, source=None
):
    """Evaluate one sensor check without Metaflow, a scheduler or a webhook.

    The counterpart of Dagster's ``build_sensor_context``: the source is really queried
    (point it at a loopback server), the decision is the flow's own, and the state is passed
    in and out by hand, so a test can walk a sensor through several checks in milliseconds.

    Parameters
    ----------
    config : str or dict
        ``flowconfig.toml`` text, or a config already returned by ``parse_flowconfig``.
    state : SensorState, optional
        The state before the check; no baseline by default.
    flow_name, branch : str
        Scope of the change id, as in a flow run.
    force : bool
        As ``--force-trigger``.
    source : str, optional
        Which ``[sources.<name>]`` to check; needed when the config names several.

    Returns
    -------
    tuple
        ``(observation, decision, next_state)``; ``next_state`` is the state after the
        decision took effect with the event published.

    Examples
    --------
    >>> obs, decision, state = check_once(toml_text)
    >>> obs, decision, state = check_once(toml_text, state)
    >>> decision.kind
    'unchanged'
    """
    from .config import configured_sources, parse_flowconfig, source_named
    from .exceptions import FlowConfigError
    from .sensor import SensorState, advance, decide
    from .source_check import decide_options
    from .sources import drop_detail, observe

    if isinstance(config, str):
        config = parse_flowconfig(config)
    if source is not None:
        watched = source_named(config, source)
    else:
        sources = configured_sources(config)
        if len(sources) > 1:
            raise FlowConfigError(
                [
                    "check_once: the config names %d sources (%s); say which with source="
                    % (len(sources), ", ".join(w.name for w in sources))
                ]
            )
        watched = sources[0]
    state = state if state is not None else SensorState()
    sensor = watched.sensor
    options = decide_options(watched, config["project_name"], force=force)
    scope = {"flow": flow_name, "project": options["project"], "branch": branch}
    scope["source"] = options["source"]
    observation, _requests = observe(watched.data, state, options["identity"], scope)
    observation = drop_detail(observation)
    decision = decide(observation, state, flow_name, branch, **options)
    next_state = advance(
        state,
        observation,
        decision,
        "%s/test" % flow_name,
        published=decision.publish,
        history_size=sensor["history_size"],
    )
    return observation, decision, next_state


def sensor_env(
    s3_endpoint=None, webhook_url=None, metaflow_home=None, base=None, user=None, workdir=None
):
    """Environment for running a flow against loopback servers.

    Parameters
    ----------
    s3_endpoint : str, optional
        S3 endpoint (sets ``AWS_ENDPOINT_URL_S3`` and test credentials).
    webhook_url : str, optional
        Argo Events webhook (``METAFLOW_ARGO_EVENTS_WEBHOOK_URL``).
    metaflow_home : str, optional
        Folder for Metaflow's local config, so no user config leaks in.
    base : dict, optional
        Starting environment; ``os.environ`` by default.
    user : str, optional
        ``METAFLOW_USER``, which names the ``user.<name>`` branch of local runs; by default
        the one already set, else "tester".
    workdir : str, optional
        The folder whose ``.metaflow`` the runs use (``METAFLOW_DATASTORE_SYSROOT_LOCAL``):
        without it Metaflow uses the nearest ``.metaflow`` in the current folder or any parent,
        so a stray one higher up would hold the runs and the sensor's baseline.
    """
    env = dict(os.environ if base is None else base)
    if user:
        env["METAFLOW_USER"] = user
    env.setdefault("METAFLOW_USER", "tester")
    env["METAFLOW_DEFAULT_DATASTORE"] = "local"
    env["METAFLOW_DEFAULT_METADATA"] = "local"
    env["PYTHONUNBUFFERED"] = "1"
    # ArgoEvent retries refused connections with exponential backoff; once is enough here.
    env.setdefault("METAFLOW_SERVICE_RETRY_COUNT", "1")
    if metaflow_home:
        env["METAFLOW_HOME"] = metaflow_home
    if workdir:
        env["METAFLOW_DATASTORE_SYSROOT_LOCAL"] = os.path.abspath(workdir)
    if s3_endpoint:
        env["AWS_ENDPOINT_URL_S3"] = s3_endpoint
        env.setdefault("AWS_ACCESS_KEY_ID", "testing")
        env.setdefault("AWS_SECRET_ACCESS_KEY", "testing")
        env.setdefault("AWS_DEFAULT_REGION", "us-east-1")
    if webhook_url:
        env["METAFLOW_ARGO_EVENTS_WEBHOOK_URL"] = webhook_url
    return env


# The connector's first login in a process probes the AWS, GCP and Azure metadata services
# (for its telemetry); 0 skips the probes. On loopback there is no cloud to find, and the DNS
# lookup of metadata.google.internal stalled the login 5 s now and then on a machine without
# internet access.
NO_PLATFORM_DETECTION = 0.0


class FakesnowServer(ServerProcess):
    """fakesnow's server mode (``fakesnow -s``): a Snowflake HTTP endpoint on 127.0.0.1.

    The real connector talks to it over http with any account, user and password; every
    connection shares one in-memory database that lives as long as the process.
    ``write_connections_toml`` points the connector's ``connection_name`` at it.
    """

    ACCOUNT = "fakesnow"
    USER = "fake"
    # Not a secret: fakesnow accepts any password. Tests use it to prove none leaks.
    PASSWORD = "snow"

    def __init__(self, port=None, log_path=None):
        self.port = port or free_port()
        super().__init__(
            [_console_script("fakesnow"), "-s", "--host", LOOPBACK, "-p", str(self.port)],
            # Any HTTP answer (a 404 here) means uvicorn is serving.
            "http://%s:%d/" % (LOOPBACK, self.port),
            log_path=log_path,
        )

    def _endpoint(self, password=None):
        """What reaches this server: the keys a connection and a connections.toml entry share."""
        return {
            "host": LOOPBACK,
            "port": self.port,
            "protocol": "http",
            "account": self.ACCOUNT,
            "user": self.USER,
            "password": self.PASSWORD if password is None else password,
            "platform_detection_timeout_seconds": NO_PLATFORM_DETECTION,
        }

    def connection_params(self, **extra):
        """Keyword arguments for ``snowflake.connector.connect`` to reach this server."""
        params = self._endpoint()
        params.update(
            # fakesnow does not answer telemetry; and a dead server should fail fast.
            session_parameters={"CLIENT_OUT_OF_BAND_TELEMETRY_ENABLED": False},
            network_timeout=5,
            login_timeout=5,
        )
        params.update(extra)
        return params

    def connect(self, **extra):
        """A real ``snowflake.connector`` connection to this server."""
        import snowflake.connector

        return snowflake.connector.connect(**self.connection_params(**extra))

    def write_connections_toml(self, folder, name="fakesnow", password=None, **extra):
        """Write ``folder/connections.toml`` with one entry ``[name]`` for this server.

        Point the connector at it with ``SNOWFLAKE_HOME=folder`` and use
        ``connection_name = name``. The file is made private (0600), as the connector wants.

        Parameters
        ----------
        folder : str
            Folder to write ``connections.toml`` into (created if missing).
        name : str
            Name of the connection entry.
        password : str, optional
            Password to store (fakesnow accepts any); ``PASSWORD`` by default.
        **extra
            More keys of the entry, e.g. ``database``, ``schema``, ``warehouse``.

        Returns
        -------
        str
            Path of the file written.
        """
        entry = self._endpoint(password)
        entry.update(extra)
        lines = ["[%s]" % name]
        for key, value in entry.items():
            lines.append("%s = %s" % (key, json.dumps(value)))
        os.makedirs(folder, exist_ok=True)
        path = os.path.join(folder, "connections.toml")
        with open(path, "w", encoding="utf-8") as f:
            f.write("\n".join(lines) + "\n")
        os.chmod(path, 0o600)
        return path
