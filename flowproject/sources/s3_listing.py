"""Listings of the S3 source (``files_metadata``): what changed between two announcements.

A check spools one line per object (``key\tsize\tmtime\tetag``); an announcing run keeps it
gzip'd, and the next change is diffed against it for the card.
"""

DIFF_KEYS_SHOWN = 20


def parse_listing(lines):
    """``{relative key: "size\tmtime\tetag"}`` from listing lines (``key\tsize\tmtime\tetag``)."""
    listing = {}
    for line in lines:
        line = line.rstrip("\n")
        if line:
            key, _, rest = line.partition("\t")
            listing[key] = rest
    return listing


def read_listing_file(path):
    """The listing a source spooled to ``path`` (one line per object)."""
    with open(path, encoding="utf-8") as f:
        return parse_listing(f)


def pack_listing(path):
    """The spooled listing at ``path`` as gzip'd bytes, to store with an announcement."""
    import gzip

    with open(path, "rb") as f:
        return gzip.compress(f.read(), compresslevel=6, mtime=0)


def unpack_listing(packed):
    """The listing stored by ``pack_listing``; an empty listing for None."""
    import gzip

    if not packed:
        return {}
    return parse_listing(gzip.decompress(packed).decode("utf-8").splitlines())


def diff_listings(previous, current, limit=DIFF_KEYS_SHOWN):
    """Objects added, removed and modified from ``previous`` to ``current``.

    Parameters
    ----------
    previous, current : dict
        From ``parse_listing``; ``previous`` is None when there is no stored listing.
    limit : int
        Keys kept per category (sorted), for the card; the counts are complete.

    Returns
    -------
    dict
        ``added``, ``removed``, ``modified`` (counts), ``*_keys`` (up to ``limit`` keys
        each) and ``compared_with`` (``"nothing"`` when there was no previous listing).
    """
    base = previous or {}
    added = sorted(k for k in current if k not in base)
    removed = sorted(k for k in base if k not in current)
    modified = sorted(k for k in current if k in base and base[k] != current[k])
    return {
        "compared_with": "nothing" if previous is None else "listing",
        "added": len(added),
        "removed": len(removed),
        "modified": len(modified),
        "added_keys": added[:limit],
        "removed_keys": removed[:limit],
        "modified_keys": modified[:limit],
    }
