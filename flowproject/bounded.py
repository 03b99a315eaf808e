"""Run a few jobs at once, each with its own deadline, none able to stop another.

A sensor checking many sources runs each check as a job: at most ``workers`` at a time (the
run's one bound on threads and connections), each given ``timeout`` seconds from its start.
A job that raises or overruns is reported as failed; the others carry on. Jobs run in daemon
threads, so a check hung on a socket that has overrun is left behind, never waited for.
"""

import queue
import threading
import time


class JobTimeout(Exception):
    """A job did not finish within its timeout (it may still be running, abandoned)."""


def run_bounded(jobs, workers, timeout):
    """Run ``jobs`` with at most ``workers`` at once, each bounded by ``timeout`` seconds.

    Parameters
    ----------
    jobs : dict
        ``{name: callable}``; each callable takes no argument.
    workers : int
        Jobs running at once (at least 1).
    timeout : float
        Seconds each job may take, counted from its own start.

    Returns
    -------
    dict
        ``{name: (result, None)}`` for jobs that returned, ``{name: (None, exception)}`` for
        jobs that raised, with ``JobTimeout`` for those that overran; in the order of ``jobs``.
    """
    waiting = list(jobs.items())
    done = queue.Queue()
    running = {}  # name -> deadline
    outcomes = {}

    def work(name, job):
        try:
            done.put((name, job(), None))
        except BaseException as e:  # reported as this job's failure, never raised here
            done.put((name, None, e))

    while waiting or running:
        while waiting and len(running) < max(1, workers):
            name, job = waiting.pop(0)
            running[name] = time.monotonic() + timeout
            threading.Thread(
                target=work, args=(name, job), name="job-%s" % name, daemon=True
            ).start()
        wait = max(0.0, min(running.values()) - time.monotonic())
        try:
            name, result, error = done.get(timeout=wait)
        except queue.Empty:
            now = time.monotonic()
            for name in [n for n, deadline in running.items() if deadline <= now]:
                del running[name]
                outcomes[name] = (
                    None,
                    JobTimeout("did not finish within %s seconds" % _seconds(timeout)),
                )
            continue
        if name in running:  # not an overrun job finishing late
            del running[name]
            outcomes[name] = (result, error)
    return {name: outcomes[name] for name in jobs}


def _seconds(value):
    return ("%d" % value) if float(value).is_integer() else ("%.1f" % value)
