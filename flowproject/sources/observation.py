"""What a check saw: one comparable value, plus a small summary for people."""

import hashlib
from dataclasses import dataclass, field
from typing import Any

ABSENT_STATE = "absent"


def fingerprint(value):
    """A short, stable hash of a comparable value (``None``, the absent state, included)."""
    text = "\x00absent" if value is None else "v:" + value
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class Observation:
    """The state of a source at one check.

    Parameters
    ----------
    value : str or None
        The comparable value: two observations are the same state exactly when their values
        are equal. ``None`` is the absent state (missing object, empty result, NULL).
    summary : dict
        A few human-readable facts (object count, bytes, newest time, query duration) for
        logs, cards and the event payload. Small and JSON-serialisable; never a secret.
        Its ``payload`` entry, if any, holds string fields added to the event payload (a
        table's version to pin); its ``commits``, commits shown on the card.
    detail : Any, optional
        Bulky detail kept only when a change is announced, e.g. the full listing of a prefix
        (what a later diff needs). Not compared.
    cursor : dict, optional
        Where the next check continues reading (the last log version read), kept in the
        sensor state apart from the announced value and passed to the next ``check``. Small
        and JSON-serialisable; not compared. None keeps the stored cursor.
    """

    value: str | None
    summary: dict[str, Any] = field(default_factory=dict)
    detail: Any = None
    cursor: dict[str, Any] | None = None

    @property
    def absent(self):
        return self.value is None

    @property
    def payload_value(self):
        """The value as the event carries it: a string, empty for the absent state."""
        return "" if self.value is None else self.value

    @property
    def fingerprint(self):
        return fingerprint(self.value)
