"""Helpers for ``./deploy``: a git branch as a Metaflow ``@project`` branch.

python -m flowproject.deploy_support branch-name "feature/New-Model"   # feature_new_model
"""

import re
import sys

# Metaflow's @project accepts [a-z0-9_] up to 128 characters in a branch name. Argo then
# drops '_' from the Kubernetes name and shortens names over 45 characters with a hash, so
# there is no point in going longer than this.
BRANCH_MAX_LEN = 40

PRODUCTION_BRANCHES = ("main", "master")


def branch_name(git_branch):
    """A git branch name made valid as a Metaflow ``@project`` branch.

    Lowercase; every run of characters other than ``[a-z0-9]`` becomes one ``_``; no ``_``
    at either end; at most ``BRANCH_MAX_LEN`` characters.

    Parameters
    ----------
    git_branch : str
        e.g. ``"feature/New-Model"`` or ``"refs/heads/fix-42"``.

    Returns
    -------
    str
        e.g. ``"feature_new_model"``, ``"fix_42"``.

    Raises
    ------
    ValueError
        If nothing usable is left (``"///"``).
    """
    name = git_branch.strip()
    if name.startswith("refs/heads/"):
        name = name[len("refs/heads/") :]
    name = re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_")
    name = name[:BRANCH_MAX_LEN].rstrip("_")
    if not name:
        raise ValueError("branch name %r has no letters or digits" % git_branch)
    return name


def _main(argv):
    if len(argv) == 2 and argv[0] == "branch-name":
        try:
            print(branch_name(argv[1]))
        except ValueError as e:
            print(e, file=sys.stderr)
            return 1
        return 0
    print("usage: python -m flowproject.deploy_support branch-name GIT_BRANCH", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
