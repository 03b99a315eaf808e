"""Publishing: only the webhook's own 2xx counts, within one deadline, with ArgoEvent's request.

The fast tests call ``flowproject.events.publish`` against loopback webhooks and assert on what
the webhooks received; the e2e test runs the sensor flow against a redirecting webhook.
"""

import json
import os
import subprocess
import sys
import textwrap
import time

import pytest
from conftest import accept_current_value, s3_config, use_loopback_s3

from flowproject import FlowConfigError, parse_flowconfig
from flowproject.events import publish
from flowproject.exceptions import PublishError
from flowproject.testing import WebhookReceiver

SECRET = "sekrit-api-key-5d1e"
PAYLOAD = {"data_version": "v1", "change_id": "c1", "previous_value": ""}


@pytest.fixture
def target():
    """Where a redirecting webhook points: it must receive nothing."""
    with WebhookReceiver() as receiver:
        yield receiver


@pytest.fixture
def service_auth(monkeypatch):
    """Metaflow configured to send its service auth header (x-api-key) to the webhook."""
    from metaflow import metaflow_config

    monkeypatch.setattr(metaflow_config, "ARGO_EVENTS_WEBHOOK_AUTH", "service")
    monkeypatch.setattr(metaflow_config, "SERVICE_HEADERS", {"x-api-key": SECRET})


def header(request, name):
    return {k.lower(): v for k, v in request["headers"].items()}.get(name.lower())


def publish_error(**kwargs):
    """Publish; return (PublishError message, seconds it took)."""
    started = time.monotonic()
    with pytest.raises(PublishError) as info:
        publish("data_updated", PAYLOAD, **kwargs)
    return str(info.value), time.monotonic() - started


# ------------------------------------------------------------------ the request is ArgoEvent's

SEND_BOTH = textwrap.dedent(
    """\
    import sys
    from metaflow.integrations import ArgoEvent
    from flowproject.events import publish
    url, payload = sys.argv[1], {"data_version": "v1", "change_id": "c1", "previous_value": ""}
    ArgoEvent(name="mfns.p.user.t.data_updated", url=url).publish(
        payload=payload, force=True, ignore_errors=False
    )
    publish("mfns.p.user.t.data_updated", payload, timeout=10, url=url)
    """
)


def test_request_is_the_one_argo_event_sends(webhook, tmp_path):
    # A fresh process, so Metaflow reads the auth settings from the environment as in a run.
    env = dict(
        os.environ,
        METAFLOW_HOME=str(tmp_path),
        METAFLOW_ARGO_EVENTS_WEBHOOK_AUTH="service",
        METAFLOW_SERVICE_AUTH_KEY=SECRET,
        METAFLOW_SERVICE_HEADERS=json.dumps({"X-Team": "ml"}),
        PYTHONPATH=os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
    )
    proc = subprocess.run(
        [sys.executable, "-c", SEND_BOTH, webhook.url],
        env=env,
        cwd=str(tmp_path),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    argo, ours = webhook.requests
    assert (ours["method"], ours["path"]) == (argo["method"], argo["path"]) == ("POST", "/")
    assert ours["headers"] == argo["headers"]
    assert header(ours, "x-api-key") == SECRET and header(ours, "X-Team") == "ml"
    assert header(ours, "Content-Type") == "application/json"
    argo_body, our_body = json.loads(argo["body"]), json.loads(ours["body"])
    assert list(our_body) == list(argo_body) == ["name", "payload"]
    assert list(our_body["payload"]) == list(argo_body["payload"])
    generated = ("id", "timestamp", "utc_date")
    for body in (argo_body, our_body):
        for key in generated:
            body["payload"].pop(key)
    assert our_body == argo_body


def test_without_service_auth_no_api_key_is_sent(webhook, monkeypatch):
    from metaflow import metaflow_config

    monkeypatch.setattr(metaflow_config, "ARGO_EVENTS_WEBHOOK_AUTH", "none")
    monkeypatch.setattr(metaflow_config, "SERVICE_HEADERS", {"x-api-key": SECRET})
    event_id = publish("data_updated", PAYLOAD, timeout=5, url=webhook.url)
    (request,) = webhook.requests
    assert header(request, "x-api-key") is None
    assert webhook.events[0]["payload"]["id"] == event_id


# ------------------------------------------------------------------ redirects are failures


@pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
def test_redirect_is_a_failed_publish_and_is_not_followed(status, webhook, target, service_auth):
    webhook.redirect_to = "http://evil:pw-77@127.0.0.1:%d/collect?token=tok-9f3a" % target.port
    webhook.redirect_status = status
    message, _ = publish_error(timeout=5, url=webhook.url)
    assert "HTTP %d" % status in message and "redirect" in message
    assert "http://127.0.0.1:%d" % target.port in message  # where it pointed: the origin only
    assert "tok-9f3a" not in message and "pw-77" not in message and SECRET not in message
    assert target.requests == []  # no body-less GET, no x-api-key to another origin
    assert len(webhook.requests) == 1 and webhook.events == []  # not retried


def test_only_http_and_https_without_credentials_in_the_url(webhook):
    message, _ = publish_error(timeout=5, url="file:///etc/hostname")
    assert "only http and https" in message
    message, _ = publish_error(timeout=5, url="http://u:pw-31@127.0.0.1:%d/" % webhook.port)
    assert "user name or password" in message and "pw-31" not in message
    assert webhook.requests == []


# ------------------------------------------------------------------ one deadline


@pytest.mark.parametrize("misbehaviour", ["hang", "trickle"])
def test_a_webhook_that_never_finishes_answering_fails_within_publish_timeout(
    misbehaviour, webhook
):
    if misbehaviour == "hang":
        webhook.hang = True
    else:
        webhook.trickle = 0.25  # a byte every 0.25 s: no single read ever times out
    message, seconds = publish_error(timeout=1, url=webhook.url)
    assert "publish_timeout = 1 s" in message
    assert seconds < 20
    assert webhook.events == []


def test_a_failing_webhook_is_retried_until_publish_timeout(webhook):
    webhook.fail_with = 500
    message, seconds = publish_error(timeout=2, url=webhook.url)
    assert "HTTP 500" in message and "publish_timeout = 2 s" in message
    assert seconds < 20
    assert len(webhook.requests) >= 2 and webhook.events == []


def test_an_unreachable_webhook_fails_within_publish_timeout(webhook):
    webhook.stop()
    message, seconds = publish_error(timeout=1, url=webhook.url)
    assert "cannot reach the webhook" in message
    assert seconds < 20


# ------------------------------------------------------------------ what is retried


@pytest.mark.parametrize("status", [400, 401, 403, 404, 422])
def test_client_errors_are_tried_once(status, webhook):
    webhook.fail_with = status
    message, _ = publish_error(timeout=10, url=webhook.url)
    assert "HTTP %d" % status in message
    assert len(webhook.requests) == 1


@pytest.mark.parametrize("status", [500, 503, 408, 429])
def test_transient_errors_are_retried_with_the_same_event(status, webhook):
    webhook.fail_with, webhook.fail_times = status, 1
    event_id = publish("data_updated", PAYLOAD, timeout=20, url=webhook.url)
    first, second = webhook.requests
    assert first["body"] == second["body"]
    (event,) = webhook.events
    assert event["payload"]["id"] == event_id
    assert event["payload"]["data_version"] == "v1"


# ------------------------------------------------------------------ the setting


def test_publish_timeout_setting():
    text = s3_config("my-bucket", "events/", "files_metadata")
    assert parse_flowconfig(text)["sensor"]["publish_timeout"] == 30
    assert parse_flowconfig(text + "publish_timeout = 5\n")["sensor"]["publish_timeout"] == 5
    for bad in ("0", "601", '"30"'):
        with pytest.raises(FlowConfigError) as info:
            parse_flowconfig(text + "publish_timeout = %s\n" % bad)
        assert "sensor.publish_timeout" in str(info.value)


# ------------------------------------------------------------------ a flow run


def state_baseline(flow_runner):
    path = os.path.join(
        flow_runner.workdir,
        ".metaflow",
        "SensorFlow",
        "sensor_state",
        "testproject",
        "user.tester.json",
    )
    with open(path) as f:
        return json.load(f)["baseline"]


@pytest.mark.e2e
def test_flow_run_against_a_redirecting_webhook_fails_and_keeps_the_baseline(
    flow_runner, s3_client, bucket, webhook, target, monkeypatch
):
    config = flow_runner.write_config(
        s3_config(bucket, "model/weights.bin", "etag", extra_sensor="publish_timeout = 2")
    )
    s3_client.put_object(Bucket=bucket, Key="model/weights.bin", Body=b"v1")
    auth = {"METAFLOW_ARGO_EVENTS_WEBHOOK_AUTH": "service", "METAFLOW_SERVICE_AUTH_KEY": SECRET}
    # The baseline (v1), set as `flowproject reset --to-current` does, in this process: a first
    # run announcing it would only show what every e2e file shows (a flow's first check
    # publishing); its request's x-api-key is asserted on the redirected request below.
    use_loopback_s3(monkeypatch, flow_runner.env["AWS_ENDPOINT_URL_S3"])
    with open(config) as f:
        accept_current_value(flow_runner.workdir, f.read(), "user.tester")
    baseline = state_baseline(flow_runner)

    # A change while the webhook redirects (as a misconfigured ingress would): the run fails,
    # nothing reaches the redirect's target, the baseline stays.
    s3_client.put_object(Bucket=bucket, Key="model/weights.bin", Body=b"v2")
    webhook.redirect_to, webhook.redirect_status = target.url, 302
    proc = flow_runner.run(env=auth)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0, out
    assert "Could not publish" in out and "HTTP 302" in out
    assert SECRET not in out
    (request,) = webhook.requests  # tried once: a redirect is not retried
    assert header(request, "x-api-key") == SECRET  # the flow sends it to its webhook
    assert target.requests == [] and webhook.events == []
    assert state_baseline(flow_runner) == baseline

    # A webhook that never answers: test_a_webhook_that_never_finishes_answering_fails_within_
    # publish_timeout (publish()). A flow run failing within its configured publish_timeout,
    # and the next check publishing the change against the old baseline:
    # test_delivery.py::test_at_least_once_and_branch_isolation.
