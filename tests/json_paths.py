"""Paths into JSON values, for the fuzz tests (Delta log lines, Iceberg metadata, state)."""


def paths(value, prefix=()):
    """Every path into a JSON value (tuples of dict keys and list indexes), the empty one
    first."""
    yield prefix
    if isinstance(value, dict):
        for key, item in value.items():
            yield from paths(item, prefix + (key,))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from paths(item, prefix + (index,))


def at(doc, path):
    """The item of ``doc`` at ``path``."""
    for step in path:
        doc = doc[step]
    return doc
