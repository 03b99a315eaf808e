"""Helpers for ``./deploy``: a git branch as a Metaflow ``@project`` branch, and the clean-up of
a deleted branch's sensor state.

python -m flowproject.deploy_support branch-name "feature/New-Model"  # feature_new_model_1a2b3c
python -m flowproject.deploy_support project-args refs/heads/main     # --production
python -m flowproject.deploy_support delete-state test.feature_x_1a2b3c --dry-run
"""

import argparse
import hashlib
import os
import re
import sys

from .state import state_path

# Metaflow's @project accepts [a-z0-9_] up to 128 characters in a branch name. Argo then
# drops '_' from the Kubernetes name and shortens names over 45 characters with a hash, so
# there is no point in going longer than this.
BRANCH_MAX_LEN = 40

# Hex digits of sha256(git branch) appended when sanitising changed the name: 16.7 million
# values, so two branches of one repository that sanitise alike practically never collide.
BRANCH_HASH_LEN = 6

PRODUCTION_BRANCHES = ("main", "master")


def _strip_ref(git_branch):
    name = git_branch.strip()
    if name.startswith("refs/heads/"):
        name = name[len("refs/heads/") :]
    return name


def branch_name(git_branch):
    """A git branch name made valid, and kept distinct, as a Metaflow ``@project`` branch.

    Lowercase; every run of characters other than ``[a-z0-9]`` becomes one ``_``; no ``_``
    at either end; at most ``BRANCH_MAX_LEN`` characters. When this changed the name (case,
    other characters, length), ``_`` and ``BRANCH_HASH_LEN`` hex digits of the sha256 of the
    git name are appended, so ``feature/Model-A`` and ``feature/model_a``, or two long names
    sharing their first characters, get different deployments, baselines and events. A name
    that is valid as it is (``fix_42``) stays as it is.

    Parameters
    ----------
    git_branch : str
        e.g. ``"feature/New-Model"`` or ``"refs/heads/fix_42"``.

    Returns
    -------
    str
        e.g. ``"feature_new_model_1a2b3c"``, ``"fix_42"``.

    Raises
    ------
    ValueError
        If nothing usable is left (``"///"``).
    """
    original = _strip_ref(git_branch)
    name = re.sub(r"[^a-z0-9]+", "_", original.lower()).strip("_")
    if not name:
        raise ValueError("branch name %r has no letters or digits" % git_branch)
    if name == original and len(name) <= BRANCH_MAX_LEN:
        return name
    digest = hashlib.sha256(original.encode("utf-8")).hexdigest()[:BRANCH_HASH_LEN]
    name = name[: BRANCH_MAX_LEN - BRANCH_HASH_LEN - 1].rstrip("_")
    return "%s_%s" % (name, digest)


def project_args(git_branch):
    """The ``@project`` options a flow of ``git_branch`` is deployed with.

    Parameters
    ----------
    git_branch : str
        A branch name or ref: ``main``, ``refs/heads/main``, ``feature/New-Model``.

    Returns
    -------
    list of str
        ``["--production"]`` for ``main`` / ``master`` (namespace ``prod``), else
        ``["--branch", branch_name(git_branch)]`` (namespace ``test.<name>``).
    """
    if _strip_ref(git_branch) in PRODUCTION_BRANCHES:
        return ["--production"]
    return ["--branch", branch_name(git_branch)]


def _state_paths(storage, project, branch, flow_names):
    if flow_names is None:
        # Every flow of the datastore: flows since removed from the repository keep state too.
        flow_names = sorted(
            entry.path.strip("/").split("/")[-1]
            for entry in storage.list_content([""])
            if not entry.is_file
        )
    paths = [state_path(name, project, branch) for name in flow_names]
    if not paths:
        return []
    return [path for path, exists in zip(paths, storage.is_file(paths), strict=True) if exists]


def _delete_object(storage, path):
    if storage.TYPE == "local":
        os.remove(storage.full_uri(path))
    elif storage.TYPE == "s3":
        bucket, _, key = storage.full_uri(path)[len("s3://") :].partition("/")
        storage.s3_client.client.delete_object(Bucket=bucket, Key=key)
    else:
        raise NotImplementedError("deleting from a %s datastore" % storage.TYPE)


def delete_state(project, branch, flow_names=None, storage=None, dry_run=False):
    """Delete the sensor state objects of one ``@project`` branch (a deleted git branch).

    Parameters
    ----------
    project : str
        The ``@project`` name (``flowconfig.toml``'s ``project_name``).
    branch : str
        The full ``@project`` branch, e.g. ``"test.feature_x_1a2b3c"``.
    flow_names : list of str, optional
        Flow names (``SensorFlow``) whose state to delete; default: every flow with a folder
        at the datastore root.
    storage : DataStoreStorage, optional
        Default: the configured datastore (``flowproject.state.datastore_storage()``).
    dry_run : bool
        Only find the objects.

    Returns
    -------
    list of str
        The paths, relative to the datastore root, that were (or would be) deleted.

    Raises
    ------
    StateError
        If an object could not be deleted.
    """
    from .exceptions import StateError
    from .state import datastore_storage

    storage = storage or datastore_storage()
    paths = _state_paths(storage, project, branch, flow_names)
    if not dry_run:
        for path in paths:
            try:
                _delete_object(storage, path)
            except Exception as e:
                raise StateError(
                    "Could not delete the sensor state %s: %s" % (storage.full_uri(path), e)
                ) from None
    return paths


def _main(argv):
    parser = argparse.ArgumentParser(prog="python -m flowproject.deploy_support")
    commands = parser.add_subparsers(dest="command", required=True)
    command = commands.add_parser("branch-name", help="the @project branch of a git branch")
    command.add_argument("git_branch")
    command = commands.add_parser(
        "project-args", help="--production, or --branch NAME, for a git branch"
    )
    command.add_argument("git_branch")
    command = commands.add_parser(
        "delete-state", help="delete the sensor state of a @project branch (e.g. test.x)"
    )
    command.add_argument("branch")
    command.add_argument("--project", help="default: project_name in ./flowconfig.toml")
    command.add_argument("--dry-run", action="store_true", help="list, delete nothing")
    args = parser.parse_args(argv)
    try:
        if args.command == "branch-name":
            print(branch_name(args.git_branch))
        elif args.command == "project-args":
            print(" ".join(project_args(args.git_branch)))
        else:
            project = args.project
            if project is None:
                from .config import load_flowconfig

                project = load_flowconfig("flowconfig.toml")["project_name"]
            paths = delete_state(project, args.branch, dry_run=args.dry_run)
            verb = "would delete" if args.dry_run else "deleted"
            for path in paths:
                print("%s sensor state %s" % (verb, path))
            if not paths:
                print("no sensor state of %s.%s" % (project, args.branch))
    except Exception as e:
        print(e, file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
