"""Helpers for ``./deploy``: a git branch as a Metaflow ``@project`` branch, the settings a real
deploy needs (and the placeholders a dry run compiles with), and the clean-up of a deleted
branch's sensor state.

python -m flowproject.deploy_support branch-name "feature/New-Model"  # feature_new_model_1a2b3c
python -m flowproject.deploy_support project-args refs/heads/main     # --production
python -m flowproject.deploy_support delete-state test.feature_x_1a2b3c --dry-run
python -m flowproject.deploy_support delete-state test.feature_x_1a2b3c --flow-file sensorflow.py
python -m flowproject.deploy_support check         # what a real deploy still needs; 1 if any
python -m flowproject.deploy_support placeholders  # KEY=VALUE for each missing setting
python -m flowproject.deploy_support compile --sensor-out OUT FLOW ARGS... --only-json
"""

import argparse
import ast
import hashlib
import os
import re
import sys

# Metaflow's @project accepts [a-z0-9_] up to 128 characters in a branch name. Argo then
# drops '_' from the Kubernetes name and shortens names over 45 characters with a hash, so
# there is no point in going longer than this.
BRANCH_MAX_LEN = 40

# Hex digits of sha256(git branch) appended when sanitising changed the name: 16.7 million
# values, so two branches of one repository that sanitise alike practically never collide.
BRANCH_HASH_LEN = 6

# The end of every hashed name. A git branch already of this form (feature_x_217d2b) could be
# another branch's hashed name, so it is hashed too: a plain name never ends like this.
_HASHED_FORM = re.compile(r"_[0-9a-f]{%d}$" % BRANCH_HASH_LEN)

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
    sharing their first characters, get different deployments, baselines and events.

    A name that is valid as it is (``fix_42``) stays as it is, unless it ends like a hashed
    name (``_`` and ``BRANCH_HASH_LEN`` hex digits: ``feature_x_217d2b``, ``release_202611``):
    that could be the hashed name of another git branch (``feature/x``), so it is hashed too.
    Plain names therefore never end like hashed ones, and no two git branches share a
    Metaflow branch (unless two hashed names of one prefix share their hash digits).

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
    if name == original and len(name) <= BRANCH_MAX_LEN and not _HASHED_FORM.search(name):
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


def _is_main_guard(test):
    """Whether ``test`` is ``__name__ == "__main__"``."""
    return (
        isinstance(test, ast.Compare)
        and isinstance(test.left, ast.Name)
        and test.left.id == "__name__"
        and len(test.comparators) == 1
        and isinstance(test.comparators[0], ast.Constant)
        and test.comparators[0].value == "__main__"
    )


def flow_name(flow_file):
    """The name of the flow a flow file runs: Metaflow names a flow by its class.

    Read from the source, without running it: the class called under
    ``if __name__ == "__main__":`` (``SensorFlow()``), preferring one the file defines.

    Parameters
    ----------
    flow_file : str
        e.g. ``"sensorflow.py"``.

    Returns
    -------
    str
        e.g. ``"SensorFlow"``.

    Raises
    ------
    ValueError
        If the file calls no class under ``if __name__ == "__main__":``.
    """
    with open(flow_file, encoding="utf-8") as f:
        tree = ast.parse(f.read(), flow_file)
    defined = [node.name for node in tree.body if isinstance(node, ast.ClassDef)]
    called = [
        call.func.id
        for node in tree.body
        if isinstance(node, ast.If) and _is_main_guard(node.test)
        for call in ast.walk(node)
        if isinstance(call, ast.Call) and isinstance(call.func, ast.Name)
    ]
    for name in [n for n in called if n in defined] + called:
        return name
    raise ValueError(
        "%s runs no flow class under if __name__ == '__main__' (e.g. MyFlow()): cannot tell "
        "which flow's sensor state is its own" % flow_file
    )


# The cloud datastores Argo Workflows runs with, and the root folder setting of each.
ARGO_DATASTORES = ("s3", "azure", "gs")
PLACEHOLDER_SYSROOTS = {
    "s3": "s3://placeholder-datastore/metaflow",
    "azure": "placeholder-datastore/metaflow",
    "gs": "gs://placeholder-datastore/metaflow",
}

# The Metaflow settings (METAFLOW_ + name) a real deploy needs and Metaflow has no default for,
# besides the datastore's: (name, placeholder for ./deploy --dry-run, what it is for).
ARGO_EVENTS_SETTINGS = (
    (
        "ARGO_EVENTS_EVENT",
        "placeholder-event",
        "the Argo Events event (webhook) name the Sensors of triggered flows listen to",
    ),
    (
        "ARGO_EVENTS_EVENT_SOURCE",
        "placeholder-event-source",
        "the Argo Events EventSource of that event",
    ),
    (
        "ARGO_EVENTS_SERVICE_ACCOUNT",
        "placeholder-sensor-service-account",
        "the service account the Sensors of triggered flows run as",
    ),
    (
        "ARGO_EVENTS_WEBHOOK_URL",
        "http://placeholder-webhook.invalid:12000/placeholder-event",
        "the webhook the deployed SensorFlow publishes its events to",
    ),
)

# Settings with a Metaflow default, shown by --check so the defaults in use are visible.
DEFAULTED_SETTINGS = (
    "DEFAULT_METADATA",
    "KUBERNETES_NAMESPACE",
    "KUBERNETES_SERVICE_ACCOUNT",
    "ARGO_EVENTS_EVENT_BUS",
    "ARGO_EVENTS_SENSOR_NAMESPACE",
)


def _configured(name):
    """A Metaflow setting as the environment or Metaflow's config file sets it, else None."""
    from metaflow.metaflow_config_funcs import from_conf

    value = from_conf(name)
    return None if value in (None, "") else value


def _kubernetes_setting():
    """Where the Kubernetes client finds its cluster, looked for in Metaflow's order:
    ``KUBECONFIG``, in the cluster (``KUBERNETES_SERVICE_HOST``), ``~/.kube/config``."""
    setting = {"name": "KUBECONFIG", "value": None, "placeholder": None}  # a dry run needs none
    kubeconfig = os.environ.get("KUBECONFIG")
    if kubeconfig:
        paths = [p for p in kubeconfig.split(os.pathsep) if p]
        if any(os.path.exists(p) for p in paths):
            setting["value"] = kubeconfig
        setting["why"] = "KUBECONFIG=%s names no existing file" % kubeconfig
        return setting
    if os.environ.get("KUBERNETES_SERVICE_HOST"):
        setting["value"] = "in the cluster (KUBERNETES_SERVICE_HOST)"
    elif os.path.exists(os.path.expanduser("~/.kube/config")):
        setting["value"] = os.path.expanduser("~/.kube/config")
    setting["why"] = (
        "access to the Kubernetes cluster of Argo Workflows: KUBECONFIG naming a file, "
        "~/.kube/config, or running in the cluster"
    )
    return setting


def deploy_settings():
    """The settings a real ``./deploy`` needs, each as configured or missing.

    Metaflow's own: ``METAFLOW_*`` environment variables, else Metaflow's config file
    (``~/.metaflowconfig/config.json``, or ``$METAFLOW_HOME``). Then the Kubernetes access
    ``argo-workflows create`` needs (``KUBECONFIG``, ``~/.kube/config`` or in-cluster).

    Returns
    -------
    list of dict
        ``{"name": "METAFLOW_...", "value": str or None (missing), "placeholder": str or None,
        "why": str}``, in the order to report them.
    """
    settings = []
    datastore = _configured("DEFAULT_DATASTORE")
    if datastore in ARGO_DATASTORES:
        settings.append(_setting("DEFAULT_DATASTORE", datastore, "s3", ""))
    else:
        why = "Argo Workflows needs a cloud datastore: s3 (or azure, gs)"
        if datastore:
            why = "is %r; %s" % (datastore, why)
        settings.append(_setting("DEFAULT_DATASTORE", None, "s3", why))
        datastore = "s3"
    sysroot = "DATASTORE_SYSROOT_%s" % datastore.upper()
    settings.append(
        _setting(
            sysroot,
            _configured(sysroot),
            PLACEHOLDER_SYSROOTS[datastore],
            "the %s folder of code packages, run artifacts and sensor state" % datastore,
        )
    )
    for name, placeholder, why in ARGO_EVENTS_SETTINGS:
        value = _configured(name)
        if name == "ARGO_EVENTS_WEBHOOK_URL":  # what Metaflow gives the deployed pods
            value = _configured("ARGO_EVENTS_INTERNAL_WEBHOOK_URL") or value
        settings.append(_setting(name, value, placeholder, why))
    settings.append(_kubernetes_setting())
    return settings


def _setting(name, value, placeholder, why):
    return {"name": "METAFLOW_" + name, "value": value, "placeholder": placeholder, "why": why}


def placeholders():
    """``(name, placeholder)`` of each missing setting a dry run can stand in for.

    Returns
    -------
    list of tuple
        e.g. ``[("METAFLOW_DATASTORE_SYSROOT_S3", "s3://placeholder-datastore/metaflow")]``.
    """
    return [
        (s["name"], s["placeholder"])
        for s in deploy_settings()
        if s["value"] is None and s["placeholder"] is not None
    ]


def _shown(value):
    """A setting's value for the terminal: without the user:password of a URL."""
    return re.sub(r"^([a-z][a-z0-9+.-]*://)[^/@]*@", r"\1***@", str(value))


def check(out=sys.stdout):
    """Print every setting a real deploy needs, then name the missing ones in one message.

    Parameters
    ----------
    out : file
        Where the table goes; the message about missing settings goes to stderr.

    Returns
    -------
    list of str
        The names of the missing settings (empty: a real deploy has what it needs).
    """
    from metaflow import metaflow_config

    settings = deploy_settings()
    print("Settings a real deploy needs:", file=out)
    for s in settings:
        if s["value"] is None:
            print("  %-38s MISSING: %s" % (s["name"], s["why"]), file=out)
        else:
            print("  %-38s %s" % (s["name"], _shown(s["value"])), file=out)
    print("Metaflow defaults in use (set them to change them):", file=out)
    for name in DEFAULTED_SETTINGS:
        if _configured(name) is None:
            value = getattr(metaflow_config, name, None)
            shown = "unset" if value is None else _shown(value)
            print("  %-38s %s" % ("METAFLOW_" + name, shown), file=out)
    missing = [s["name"] for s in settings if s["value"] is None]
    if missing:
        print(
            "deploy: missing for a real deploy: %s. Set the METAFLOW_* ones as environment "
            "variables or in Metaflow's config file (~/.metaflowconfig/config.json); "
            "./deploy --dry-run compiles with placeholders meanwhile." % ", ".join(missing),
            file=sys.stderr,
        )
    return missing


def _placeholder_datastore():
    """Whether the datastore root is one of ``PLACEHOLDER_SYSROOTS`` (a dry run's)."""
    datastore = _configured("DEFAULT_DATASTORE")
    if datastore not in ARGO_DATASTORES:
        return False
    sysroot = _configured("DATASTORE_SYSROOT_%s" % datastore.upper())
    return sysroot == PLACEHOLDER_SYSROOTS[datastore]


def _save_data_without_upload(flow_datastore, data_iter, len_hint=0):
    """``FlowDataStore.save_data`` that uploads nothing: the URL and key each blob would
    have in the content-addressed store (``<root>/<flow>/data/<key[:2]>/<key>``)."""
    results = []
    for blob in data_iter:
        key = hashlib.sha1(blob).hexdigest()
        root = flow_datastore.datastore_root.rstrip("/")
        url = "/".join([root, flow_datastore.flow_name, "data", key[:2], key])
        results.append((url, key))
    return results


def compile_flow(argv):
    """Compile a flow as ``python -m flowproject.argo_sensor --sensor-out`` does; with a
    placeholder datastore (``./deploy --dry-run`` without one configured), the code package
    is not uploaded: its URL in the template is the placeholder's.

    Parameters
    ----------
    argv : list of str
        ``--sensor-out PATH FLOW_FILE [ARGS...] argo-workflows create --only-json``.

    Returns
    -------
    int
        The exit status.
    """
    from . import argo_sensor

    if _placeholder_datastore():
        from metaflow.datastore.flow_datastore import FlowDataStore

        FlowDataStore.save_data = _save_data_without_upload
        print(
            "deploy: the datastore is a placeholder: the code package is not uploaded",
            file=sys.stderr,
        )
    return argo_sensor._main(list(argv))


def _state_stores(storage, project, branch, flow_names):
    """The ``StateStore`` of each state object of ``branch`` (``operations.find_states``: the
    single-source form's ``<branch>.json`` and every named source's ``<branch>/<source>.json``),
    of every flow with a folder at the datastore root, or of ``flow_names``."""
    from .operations import find_states

    stores = find_states(storage, project=project, branch=branch)
    return [s for s in stores if flow_names is None or s.flow_name in flow_names]


def _is_reset_marker(doc):
    """Whether ``doc`` holds nothing but a reset marker (a torn-down or reset branch)."""
    return (
        isinstance(doc, dict)
        and bool(doc.get("reset"))
        and not any(doc.get(k) for k in ("baseline", "pending", "history", "claim"))
    )


def _reset_state(store, by):
    """Replace the state object of ``store`` by a reset marker (compare-and-swap)."""
    from .operations import reset_marker

    try:
        _doc, version = store.read_versioned()
    except Exception as e:  # unreadable: replaced all the same
        version = getattr(e, "version", None)
    store.update(lambda _state: (reset_marker(by), None), None, version)
    if store.storage.TYPE == "local":
        # The file lock of the local backend: the marker needs none until the next write.
        try:
            os.remove(store.storage.full_uri(store.path) + ".lock")
        except FileNotFoundError:
            pass


def delete_state(project, branch, flow_names=None, storage=None, dry_run=False):
    """Delete the sensor state of one ``@project`` branch (a deleted git branch).

    Each state object (the single-source form's ``<branch>.json`` and each named source's
    ``<branch>/<source>.json``) is replaced by a *reset marker* (history, baseline and any settling
    value are gone): a missing object would be rebuilt from the branch's past runs, so a git
    branch re-created with the same name would inherit the deleted branch's baseline. With the
    marker its first check is a first check. Objects that are already markers are left alone
    (and not listed), so tearing down twice deletes nothing the second time.

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
        If an object could not be replaced.
    """
    from .exceptions import StateError
    from .state import datastore_storage

    storage = storage or datastore_storage()
    stores = []
    for store in _state_stores(storage, project, branch, flow_names):
        try:
            if _is_reset_marker(store.read_raw()):
                continue
        except Exception:
            pass  # unreadable: replaced
        stores.append(store)
    if not dry_run:
        for store in stores:
            try:
                _reset_state(store, "deploy --teardown")
            except Exception as e:
                raise StateError(
                    "Could not delete the sensor state %s: %s" % (storage.full_uri(store.path), e)
                ) from None
    return [store.path for store in stores]


def _main(argv):
    if argv[:1] == ["compile"]:  # the flow's own command line follows, unparsed
        return compile_flow(argv[1:])
    parser = argparse.ArgumentParser(prog="python -m flowproject.deploy_support")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("check", help="the settings a real deploy needs; exit 1 if any missing")
    commands.add_parser(
        "placeholders", help="KEY=VALUE of a placeholder for each missing setting (dry run)"
    )
    commands.add_parser(
        "compile", help="compile a flow for --dry-run (argo_sensor --sensor-out's arguments)"
    )
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
    command.add_argument(
        "--flow-file",
        action="append",
        dest="flow_files",
        help="only the state of the flow this file runs (repeatable); default: every flow's",
    )
    args = parser.parse_args(argv)
    try:
        if args.command == "check":
            return 1 if check() else 0
        if args.command == "placeholders":
            for name, value in placeholders():
                print("%s=%s" % (name, value))
            return 0
        if args.command == "branch-name":
            print(branch_name(args.git_branch))
        elif args.command == "project-args":
            print(" ".join(project_args(args.git_branch)))
        else:
            project = args.project
            if project is None:
                from .config import load_flowconfig

                project = load_flowconfig("flowconfig.toml")["project_name"]
            flow_names = None
            if args.flow_files:
                flow_names = sorted({flow_name(f) for f in args.flow_files})
            paths = delete_state(project, args.branch, flow_names=flow_names, dry_run=args.dry_run)
            verb = "would delete" if args.dry_run else "deleted"
            for path in paths:
                # A reset marker stays in its place (see delete_state).
                print(
                    "%s sensor state %s (a re-created branch starts with a first check)"
                    % (verb, path)
                )
            if not paths:
                if flow_names:
                    print(
                        "no sensor state of %s in %s.%s"
                        % (", ".join(flow_names), project, args.branch)
                    )
                else:
                    print("no sensor state of %s.%s" % (project, args.branch))
    except Exception as e:
        print(e, file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
