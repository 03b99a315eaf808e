"""A loopback HTTP proxy that adds a fixed delay to every request, for the benchmark.

    proxy = LatencyProxy("http://127.0.0.1:5000", delay=0.020).start()
    ... point the S3 client at proxy.url ...
    proxy.stop()

Threaded (one thread per client connection, HTTP/1.1 keep-alive, one upstream connection per
thread), so concurrent requests are delayed concurrently, like network latency. Each request
sleeps ``delay`` seconds, then is forwarded as is (method, path, headers, body) to the upstream
server and its answer returned as is.
"""

import http.client
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler

from flowproject.testing import LOOPBACK, LoopbackHTTPServer

HOP_BY_HOP = {"connection", "keep-alive", "proxy-connection", "transfer-encoding", "upgrade"}


class LatencyProxy(LoopbackHTTPServer):
    def __init__(self, upstream, delay=0.020, port=None):
        super().__init__(port)
        parsed = urllib.parse.urlsplit(upstream)
        self.upstream_host, self.upstream_port = parsed.hostname, parsed.port
        self.delay = delay
        self.url = "http://%s:%d" % (LOOPBACK, self.port)
        self.requests = 0
        self._lock = threading.Lock()

    def handler(self):
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _forward(self):
                time.sleep(proxy.delay)
                with proxy._lock:
                    proxy.requests += 1
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else None
                headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP_BY_HOP}
                conn = getattr(self, "_upstream", None)
                if conn is None:
                    conn = self._upstream = http.client.HTTPConnection(
                        proxy.upstream_host, proxy.upstream_port, timeout=300
                    )
                try:
                    conn.request(self.command, self.path, body=body, headers=headers)
                    response = conn.getresponse()
                except (http.client.HTTPException, OSError):
                    conn.close()
                    conn.request(self.command, self.path, body=body, headers=headers)
                    response = conn.getresponse()
                data = response.read()
                self.send_response(response.status)
                for k, v in response.getheaders():
                    if k.lower() not in HOP_BY_HOP and k.lower() != "content-length":
                        self.send_header(k, v)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(data)

            do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _forward

            def log_message(self, *args):
                pass

        return Handler
