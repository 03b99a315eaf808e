"""Publishing a change as an Argo Event, through Metaflow's ``ArgoEvent``.

Events go to Metaflow's webhook setting (``METAFLOW_ARGO_EVENTS_WEBHOOK_URL``). By default
the name is project-namespaced (``mfns.<project>.<branch>.<event_name>``), so a test
branch's sensor never starts production's flows; ``[sensor] namespaced_events = false``
publishes the plain name instead, for consumers outside the project.
"""

import sys

from .exceptions import PublishError

# Attempts per publish: a webhook restarting answers 5xx for a moment. ArgoEvent itself also
# retries refused connections (METAFLOW_SERVICE_RETRY_COUNT times, with backoff).
PUBLISH_ATTEMPTS = 3


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


def publish(name, payload, attempts=PUBLISH_ATTEMPTS):
    """Publish one event; raise ``PublishError`` if every attempt fails.

    Parameters
    ----------
    name : str
        Event name.
    payload : dict
        String values; merged into the event's payload next to ArgoEvent's own fields.
    attempts : int
        How many times to try.

    Returns
    -------
    str
        The event id ArgoEvent generated.
    """
    from metaflow.integrations import ArgoEvent
    from tenacity import Retrying, stop_after_attempt, wait_exponential

    url = webhook_url()
    retrying = Retrying(
        stop=stop_after_attempt(attempts),
        reraise=True,
        wait=wait_exponential(multiplier=0.5, max=4),
        before_sleep=lambda rs: print(
            "Publishing %s failed (attempt %d of %d), retrying: %s"
            % (name, rs.attempt_number, attempts, rs.outcome.exception()),
            file=sys.stderr,
        ),
    )
    try:
        for attempt in retrying:
            with attempt:
                return ArgoEvent(name=name, url=url).publish(
                    payload=payload, force=True, ignore_errors=False
                )
    except Exception as e:
        raise PublishError(
            "Could not publish %s after %d attempt(s): %s" % (name, attempts, e)
        ) from None
