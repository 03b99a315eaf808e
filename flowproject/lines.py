"""Whole lines from threads: a sensor checks its sources in threads, and a line one of them
prints must never merge with another's (``print`` writes the text and the newline apart)."""

import sys
import threading

_lock = threading.Lock()


def say(text, file=None):
    """Write ``text`` and a newline as one write, under one lock for the process.

    Parameters
    ----------
    text : str
    file : file object, optional
        ``sys.stdout`` by default (looked up at each call: tests and Metaflow replace it).
    """
    stream = file or sys.stdout
    with _lock:
        stream.write(text + "\n")
        stream.flush()
