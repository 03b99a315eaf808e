"""Publishing a change as an Argo Event: the request Metaflow's ``ArgoEvent`` sends, with a
client that knows when it is done.

Events go to Metaflow's webhook setting (``METAFLOW_ARGO_EVENTS_WEBHOOK_URL``). By default
the name is project-namespaced (``mfns.<project>.<branch>.<event_name>``), so a test
branch's sensor never starts production's flows; ``[sensor] namespaced_events = false``
publishes the plain name instead, for consumers outside the project.

The body and headers are exactly ``ArgoEvent.publish``'s (``event_request``; a test compares
them), including the service auth header when ``METAFLOW_ARGO_EVENTS_WEBHOOK_AUTH=service``.
The client differs where ``ArgoEvent`` loses events or hangs:

- only a 2xx answer from the webhook itself counts as published; a redirect is a failed
  publish and is never followed, so the event is not lost to a body-less GET and no
  credential leaves the webhook's origin;
- one deadline (``[sensor] publish_timeout``) covers every attempt and every wait: urllib's
  timeout bounds each socket read only, so a webhook trickling its answer could hold the run
  for minutes. Each attempt runs in a daemon thread joined with the remaining budget;
- 5xx, 408, 429 and network errors are retried with backoff within the deadline, the same
  event (same id) each time; any other 4xx or 3xx is final.
"""

import http.client
import json
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from datetime import datetime, timezone

from .exceptions import PublishError

# Default of [sensor] publish_timeout, in seconds: the budget for all attempts of one publish.
PUBLISH_TIMEOUT = 30

# Client errors worth another attempt: the webhook timed out reading us, or asks us to slow down.
RETRIED_CLIENT_ERRORS = (408, 429)


class _RetryableError(Exception):
    """An attempt failed in a way another attempt may not (5xx, 408, 429, network)."""


class _FinalError(Exception):
    """An attempt failed in a way every attempt would (3xx, other 4xx, bad URL)."""


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    """Never follow a redirect: urllib then raises the 3xx as an ``HTTPError``."""

    def redirect_request(self, req, fp, code, msg, headers, newurl):
        return None


def event_name(sensor_config):
    """The name the sensor publishes (and the downstream flow listens to) in this branch.

    Parameters
    ----------
    sensor_config : dict
        The ``[sensor]`` table.

    Returns
    -------
    str
        Evaluated in the running flow, where ``current`` knows project and branch.
    """
    name = sensor_config["event_name"]
    if not sensor_config.get("namespaced_events", True):
        return name
    from metaflow import namespaced_event_name

    return namespaced_event_name(name)()


def webhook_url():
    """Metaflow's Argo Events webhook URL, or a clear error when it is not configured."""
    from metaflow.metaflow_config import ARGO_EVENTS_WEBHOOK_URL

    if not ARGO_EVENTS_WEBHOOK_URL:
        raise PublishError(
            "METAFLOW_ARGO_EVENTS_WEBHOOK_URL is not set, so there is nowhere to publish. "
            "Set it (or ARGO_EVENTS_WEBHOOK_URL in your Metaflow config), or run with "
            "--dry-run True to check without publishing."
        )
    return ARGO_EVENTS_WEBHOOK_URL


def event_request(name, payload, url):
    """The request ``ArgoEvent(name, url).publish(payload)`` sends: same body, same headers.

    Parameters
    ----------
    name : str
        Event name.
    payload : dict
        Merged into the event's payload after ArgoEvent's own fields.
    url : str
        The webhook.

    Returns
    -------
    urllib.request.Request
        A POST; the event id is ``json.loads(request.data)["payload"]["id"]``.
    """
    from metaflow import metaflow_config

    headers = {}
    if metaflow_config.ARGO_EVENTS_WEBHOOK_AUTH == "service":
        headers.update(metaflow_config.SERVICE_HEADERS)  # x-api-key from SERVICE_AUTH_KEY
    data = {
        "name": name,
        "payload": {
            "name": name,
            "id": str(uuid.uuid4()),
            "timestamp": int(time.time()),
            "utc_date": datetime.now(timezone.utc).strftime("%Y%m%d"),
            "generated-by-metaflow": True,
            **payload,
        },
    }
    return urllib.request.Request(
        url,
        method="POST",
        headers={"Content-Type": "application/json", **headers},
        data=json.dumps(data).encode("utf-8"),
    )


def origin(url):
    """``scheme://host[:port]`` of ``url``: what a message may show of it (no user, password,
    path or query, which can hold credentials)."""
    parts = urllib.parse.urlsplit(url)
    host = parts.hostname or "?"
    try:
        port = parts.port
    except ValueError:
        port = None
    return "%s://%s%s" % (parts.scheme or "?", host, ":%d" % port if port else "")


# Seconds the attempt's socket may outlive its deadline (see ``_post_once``).
SOCKET_GRACE = 5


def _post_once(opener, request, seconds):
    """POST ``request``; return the 2xx status or raise ``_RetryableError``/``_FinalError``.

    The attempt runs in a daemon thread joined for ``seconds``, so a webhook that never
    answers, or answers a byte at a time, cannot hold the run past the deadline.
    """
    outcome = {}

    def post():
        try:
            # The join below decides when the attempt is over. A socket timeout as long as
            # the join raced it: a webhook that hangs was reported either way, at random.
            with opener.open(request, timeout=seconds + SOCKET_GRACE) as response:
                outcome["status"] = response.status
        except BaseException as e:  # handed to the caller's thread
            outcome["error"] = e

    worker = threading.Thread(target=post, name="publish-attempt", daemon=True)
    worker.start()
    worker.join(seconds)
    if worker.is_alive():
        raise _RetryableError("no complete answer within %.0f s" % seconds)
    error = outcome.get("error")
    if error is None:
        return outcome["status"]
    if isinstance(error, urllib.error.HTTPError):
        code, location = error.code, error.headers.get("Location") if error.headers else None
        error.close()
        if 300 <= code < 400:
            target = origin(urllib.parse.urljoin(request.full_url, location or ""))
            raise _FinalError(
                "the webhook answered HTTP %d, a redirect%s; redirects are not followed, so "
                "set METAFLOW_ARGO_EVENTS_WEBHOOK_URL to the webhook's own address"
                % (code, " to %s" % target if location else "")
            )
        message = "the webhook answered HTTP %d %s" % (code, error.reason)
        if code >= 500 or code in RETRIED_CLIENT_ERRORS:
            raise _RetryableError(message)
        raise _FinalError(message)
    if isinstance(error, urllib.error.URLError):
        raise _RetryableError("cannot reach the webhook: %s" % (error.reason,))
    if isinstance(error, (OSError, http.client.HTTPException)):  # a broken connection or answer
        raise _RetryableError("the connection failed: %s" % (error or type(error).__name__))
    if isinstance(error, Exception):  # e.g. a malformed URL; its text may quote the URL
        raise _FinalError("the request could not be sent (%s)" % type(error).__name__)
    raise error


def publish(name, payload, timeout=PUBLISH_TIMEOUT, url=None):
    """Publish one event; raise ``PublishError`` unless the webhook answered 2xx in time.

    Parameters
    ----------
    name : str
        Event name.
    payload : dict
        String values; merged into the event's payload next to ArgoEvent's own fields.
    timeout : int
        Seconds for the whole publish, retries and waits included (``[sensor]
        publish_timeout``).
    url : str, optional
        The webhook; Metaflow's ``METAFLOW_ARGO_EVENTS_WEBHOOK_URL`` by default.

    Returns
    -------
    str
        The event id, the same in every attempt.
    """
    from tenacity import Retrying, retry_if_exception_type, stop_before_delay, wait_exponential

    url = url or webhook_url()
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "https"):
        raise PublishError(
            "Could not publish %s: the webhook URL's scheme is %r; only http and https are "
            "supported." % (name, parts.scheme)
        )
    if "@" in parts.netloc:  # urllib would not send it, and errors would quote it
        raise PublishError(
            "Could not publish %s: the webhook URL holds a user name or password, which is not "
            "sent; use METAFLOW_ARGO_EVENTS_WEBHOOK_AUTH=service with METAFLOW_SERVICE_AUTH_KEY "
            "or METAFLOW_SERVICE_HEADERS instead." % name
        )
    request = event_request(name, payload, url)
    event_id = json.loads(request.data)["payload"]["id"]
    opener = urllib.request.build_opener(_NoRedirects)
    deadline = time.monotonic() + timeout
    attempts = 0

    def attempt():
        nonlocal attempts
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise _FinalError("publish_timeout (%d s) reached" % timeout)
        attempts += 1
        return _post_once(opener, request, remaining)

    retrying = Retrying(
        stop=stop_before_delay(timeout),
        retry=retry_if_exception_type(_RetryableError),
        wait=wait_exponential(multiplier=0.5, max=4),
        reraise=True,
        before_sleep=lambda rs: print(
            "Publishing %s failed (attempt %d), retrying: %s"
            % (name, rs.attempt_number, rs.outcome.exception()),
            file=sys.stderr,
        ),
    )
    try:
        retrying(attempt)
    except (_RetryableError, _FinalError) as e:
        raise PublishError(
            "Could not publish %s: %s (%d attempt(s) within publish_timeout = %d s)."
            % (name, e, attempts, timeout)
        ) from None
    print("Argo Event (%s) published." % name, file=sys.stderr)
    return event_id
