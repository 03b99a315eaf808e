"""``./deploy --dry-run`` on a bare clone (issue 20 #3), and ``./deploy --check``.

A bare clone: no ``METAFLOW_*`` cluster settings, no AWS settings, no kube config, an empty
home. The dry run still compiles every flow, each missing setting replaced by a placeholder it
names; the compiled WorkflowTemplates and Sensor validate against the Argo schemas. An HTTP(S)
proxy on a closed loopback port makes any attempt to reach S3 (an upload of the code package to
the placeholder bucket) fail the compile. ``--check`` names every missing setting in one
message and exits 1; 0 once they are set, in the environment or in Metaflow's config file.
"""

import json
import os
import subprocess
import sys

import pytest
from deployment import BIN, _ok, flow_files, load_sensor, load_templates, schema_errors

# What a real deploy needs that a bare clone lacks, and the placeholder of each.
PLACEHOLDERS = {
    "METAFLOW_DEFAULT_DATASTORE": "s3",
    "METAFLOW_DATASTORE_SYSROOT_S3": "s3://placeholder-datastore/metaflow",
    "METAFLOW_ARGO_EVENTS_EVENT": "placeholder-event",
    "METAFLOW_ARGO_EVENTS_EVENT_SOURCE": "placeholder-event-source",
    "METAFLOW_ARGO_EVENTS_SERVICE_ACCOUNT": "placeholder-sensor-service-account",
    "METAFLOW_ARGO_EVENTS_WEBHOOK_URL": "http://placeholder-webhook.invalid:12000/placeholder-event",
}
MISSING = list(PLACEHOLDERS) + ["KUBECONFIG"]
REAL_SETTINGS = {
    "METAFLOW_DEFAULT_DATASTORE": "s3",
    "METAFLOW_DATASTORE_SYSROOT_S3": "s3://ml-bucket/metaflow",
    "METAFLOW_ARGO_EVENTS_EVENT": "metaflow-event",
    "METAFLOW_ARGO_EVENTS_EVENT_SOURCE": "argo-events-webhook",
    "METAFLOW_ARGO_EVENTS_SERVICE_ACCOUNT": "operate-workflow-sa",
    "METAFLOW_ARGO_EVENTS_WEBHOOK_URL": "http://argo-events-webhook:12000/metaflow-event",
}
LABEL = "(placeholder: set this for a real deploy)"


def bare_env(home):
    """The environment of a fresh clone: no METAFLOW_*, AWS_*, KUBECONFIG; an empty home."""
    dropped = ("METAFLOW_", "AWS_", "KUBE", "GITHUB_", "ARGO_")
    env = {k: v for k, v in os.environ.items() if not k.startswith(dropped)}
    env = {k: v for k, v in env.items() if k.lower() not in ("http_proxy", "https_proxy")}
    os.makedirs(str(home), exist_ok=True)
    env.update(
        {
            "HOME": str(home),
            "METAFLOW_USER": "tester",
            "PYTHON": sys.executable,
            "PATH": BIN + os.pathsep + env.get("PATH", ""),
            "PYTHONUNBUFFERED": "1",
            # Nothing may reach S3 (or anything else): a closed port on loopback.
            "HTTP_PROXY": "http://127.0.0.1:9",
            "HTTPS_PROXY": "http://127.0.0.1:9",
            "NO_PROXY": "",
        }
    )
    return env


def run_bare(repo, env, *args):
    return subprocess.run(
        [os.path.join(str(repo), "deploy")] + list(args),
        cwd=str(repo),
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.fixture(scope="module")
def bare_dry_run(git_repo, tmp_path_factory):
    """``./deploy --dry-run`` of every flow on a bare clone: (proc, out dir)."""
    out = tmp_path_factory.mktemp("bare-out")
    env = bare_env(tmp_path_factory.mktemp("bare-home"))
    return run_bare(git_repo, env, "--dry-run", "--out", str(out)), out


def test_a_dry_run_on_a_bare_clone_compiles_every_flow_naming_each_placeholder(bare_dry_run):
    proc, out = bare_dry_run
    _ok(proc)
    for name, value in PLACEHOLDERS.items():
        assert "  %s=%s  %s" % (name, value, LABEL) in proc.stdout, proc.stdout
    summary = proc.stdout.split("Summary")[1]
    for flow in flow_files():
        assert "compiled: %s" % os.path.join(str(out), flow[: -len(".py")] + ".json") in summary
    assert "Compiled with %d placeholder setting(s)" % len(PLACEHOLDERS) in summary
    # Nothing uploaded to the placeholder bucket; the template points into it all the same.
    for flow, template in load_templates(out).items():
        with open(os.path.join(str(out), flow[: -len(".py")] + ".log")) as f:
            assert "the code package is not uploaded" in f.read()
        package_url = template["metadata"]["annotations"].get("metaflow/code_package_url")
        serialized = json.dumps(template)
        assert PLACEHOLDERS["METAFLOW_DATASTORE_SYSROOT_S3"] + "/" in serialized, package_url


def test_the_bare_dry_runs_templates_validate_against_the_argo_schema(
    bare_dry_run, workflow_template_schema
):
    proc, out = bare_dry_run
    _ok(proc)
    for flow, template in load_templates(out).items():
        errors = schema_errors(workflow_template_schema, template)
        assert errors == [], "%s does not validate:\n%s" % (flow, "\n".join(errors[:20]))


def test_the_bare_dry_runs_sensor_validates_against_the_argo_events_schema(
    bare_dry_run, sensor_schema
):
    proc, out = bare_dry_run
    _ok(proc)
    sensor = load_sensor(out)
    errors = schema_errors(sensor_schema, sensor)
    assert errors == [], "\n".join(errors[:20])
    (dependency,) = sensor["spec"]["dependencies"]
    assert dependency["eventName"] == PLACEHOLDERS["METAFLOW_ARGO_EVENTS_EVENT"]
    assert dependency["eventSourceName"] == PLACEHOLDERS["METAFLOW_ARGO_EVENTS_EVENT_SOURCE"]


def test_a_dry_run_uses_the_settings_that_are_set(git_repo, tmp_path):
    env = bare_env(tmp_path / "home")
    env["METAFLOW_ARGO_EVENTS_EVENT"] = "metaflow-event"
    proc = run_bare(
        git_repo, env, "--dry-run", "--out", str(tmp_path / "out"), "--flow", "starterflow.py"
    )
    _ok(proc)
    assert "METAFLOW_ARGO_EVENTS_EVENT=" not in proc.stdout
    assert "METAFLOW_ARGO_EVENTS_EVENT_SOURCE=placeholder-event-source  " + LABEL in proc.stdout
    (dependency,) = load_sensor(tmp_path / "out")["spec"]["dependencies"]
    assert dependency["eventName"] == "metaflow-event"


def test_check_on_a_bare_clone_names_every_missing_setting_in_one_message(git_repo, tmp_path):
    env = bare_env(tmp_path / "home")
    env["METAFLOW_DEFAULT_DATASTORE"] = "local"  # set, but not one Argo Workflows runs with
    proc = run_bare(git_repo, env, "--check")
    assert proc.returncode == 1, proc.stdout + proc.stderr
    (message,) = proc.stderr.strip().splitlines()
    assert message.startswith("deploy: missing for a real deploy: ")
    for name in MISSING:
        assert name in message
        assert "%s MISSING: " % name in " ".join(proc.stdout.split())
    assert "is 'local'; Argo Workflows needs a cloud datastore" in proc.stdout
    assert not os.path.exists(str(tmp_path / "out"))


@pytest.mark.parametrize("where", ["environment", "metaflow config file"])
def test_check_passes_once_everything_is_set(git_repo, tmp_path, where):
    env = bare_env(tmp_path / "home")
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text("{}")
    env["KUBECONFIG"] = str(kubeconfig)
    if where == "environment":
        env.update(REAL_SETTINGS)
    else:
        folder = tmp_path / "home" / ".metaflowconfig"
        folder.mkdir(parents=True)
        (folder / "config.json").write_text(json.dumps(REAL_SETTINGS))
    proc = run_bare(git_repo, env, "--check")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "MISSING" not in proc.stdout and proc.stderr == ""
    assert "s3://ml-bucket/metaflow" in proc.stdout


def test_check_names_only_what_is_still_missing(git_repo, tmp_path):
    env = bare_env(tmp_path / "home")
    env.update(REAL_SETTINGS)
    env["KUBECONFIG"] = str(tmp_path / "no-such-kubeconfig")
    proc = run_bare(git_repo, env, "--check")
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert proc.stderr.startswith("deploy: missing for a real deploy: KUBECONFIG. ")
    assert "KUBECONFIG=%s names no existing file" % env["KUBECONFIG"] in proc.stdout
