"""``python -m demo`` (or ``scripts/demo``): the sensor end to end with no cloud account.

Starts a loopback Argo Events webhook, then for S3 (moto's server) and Snowflake (fakesnow's
server): seeds data, runs the real ``python sensorflow.py run`` three times (first check: an
event; no change: no event; a change: an event with the new value) and prints what each run
decided and what the webhook received; for a Delta table (moto), an OPTIMIZE between the
checks announces nothing. The S3 part runs through ``flowproject dev``'s loop:
each event starts ``StarterFlow``, shown with the value it trained on. The many-sources part
watches two prefixes with one sensor, and a flow waiting for both starts only once both have
announced. Everything it starts is stopped on exit, Ctrl-C or error.
"""

import argparse
import os
import shutil
import sys
import tempfile

from flowproject.testing import WebhookReceiver, sensor_env

from .common import REPO, log
from .s3_demo import run_s3_demo


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m demo", description=__doc__.splitlines()[0])
    parser.add_argument(
        "--only", choices=["s3", "snowflake", "delta", "sources"], help="run one part of the demo"
    )
    parser.add_argument("--keep", action="store_true", help="keep the demo's working folder")
    args = parser.parse_args(argv)

    workdir = tempfile.mkdtemp(prefix="flowproject-demo-")
    results = {}
    try:
        with WebhookReceiver() as webhook:
            # The runs keep their .metaflow in the demo's folder, never in one found higher up.
            env = sensor_env(
                webhook_url=webhook.url,
                metaflow_home=os.path.join(workdir, "home"),
                workdir=workdir,
            )
            env["PYTHONPATH"] = REPO + os.pathsep + env.get("PYTHONPATH", "")
            log("Argo Events webhook (loopback): %s" % webhook.url)
            log("Working folder: %s" % workdir)
            log()
            if args.only in (None, "s3"):
                results["s3"] = run_s3_demo(workdir, env, webhook)
                log()
            if args.only in (None, "snowflake"):
                try:
                    from .snowflake_demo import run_snowflake_demo
                except ImportError:
                    log("== Snowflake: demo not available in this checkout")
                else:
                    results["snowflake"] = run_snowflake_demo(workdir, env, webhook)
                log()
            if args.only in (None, "sources"):
                from .sources_demo import run_sources_demo

                results["sources"] = run_sources_demo(workdir, env, webhook)
                log()
            if args.only in (None, "delta"):
                try:
                    from .delta_demo import run_delta_demo
                except ImportError:
                    log("== Delta Lake: needs the delta extra (pip install '.[delta]')")
                else:
                    results["delta"] = run_delta_demo(workdir, env, webhook)
                log()
    except KeyboardInterrupt:
        log("Interrupted; stopped every server the demo started.")
        return 130
    finally:
        if args.keep:
            log("Kept %s" % workdir)
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    stories = {
        "s3": "event, no event, event with the new value; StarterFlow trained on each",
        "delta": "event for version 1, no event after OPTIMIZE, event for version 3",
        "sources": "both sources, events only, orders only; TwoSourceFlow started once both "
        "had announced",
    }
    for name, ok in results.items():
        story = stories.get(name, "event, no event, event with the new value")
        log("%-9s %s" % (name + ":", story if ok else "UNEXPECTED RESULT"))
    return 0 if results and all(results.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
