"""flowconfig.toml texts the tests write (each test builds its own config)."""

import json
import os
import textwrap


def s3_config(bucket, key, check_mode, project="testproject", extra_data="", extra_sensor=""):
    """A flowconfig.toml text for an S3 sensor."""
    return textwrap.dedent(
        """\
        project_name = "%s"
        [data]
        type = "s3"
        bucket = "s3://%s"
        key = "%s"
        check_mode = "%s"
        %s
        [sensor]
        cron_schedule = "*/5 * * * *"
        event_name = "data_updated"
        payload_key = "data_version"
        %s
        """
    ) % (project, bucket, key, check_mode, extra_data, extra_sensor)


# The Metaflow plugins a local run uses. Every Metaflow process imports all of its plugins
# (Kubernetes, Batch, Argo, Step Functions, Airflow, Azure, GCP, the metadata service and
# its HTTP client) before it does anything: about 0.1 s of CPU in each of the thousand
# processes the e2e tests start. Metaflow's documented ENABLED_<category> settings, in the
# test's own METAFLOW_HOME, leave out those no local run touches; a flow that used one would
# fail loudly ("no such plugin"), never pass by accident. The deploy tests keep them all.
LOCAL_RUN_PLUGINS = {
    "METAFLOW_ENABLED_METADATA_PROVIDER": ["local"],
    "METAFLOW_ENABLED_DATASTORE": ["local", "s3"],
    "METAFLOW_ENABLED_DATACLIENT": ["local", "s3"],
    "METAFLOW_ENABLED_STEP_DECORATOR": [
        "catch",
        "timeout",
        "environment",
        "retry",
        "resources",
        "card",
        "pypi",
        "conda",
        "kubernetes",  # with the two below: the dev loop reads triggers from an Argo compile
        "argo_workflows_internal",
    ],
    "METAFLOW_ENABLED_CLI": ["card", "tag", "logs", "argo-workflows"],
    "METAFLOW_ENABLED_DEPLOYER_IMPL_PROVIDER": ["argo-workflows"],
    "METAFLOW_ENABLED_SECRETS_PROVIDER": [],
    "METAFLOW_ENABLED_SIDECAR": [],
}


def local_metaflow_home(folder):
    """``folder`` made a METAFLOW_HOME for local runs (only the plugins they use); its path."""
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, "config.json"), "w") as f:
        json.dump(LOCAL_RUN_PLUGINS, f)
    return str(folder)
