"""TableVersionFlow: a downstream flow that reads exactly the table version the sensor announced.

With ``[data] type = "delta"`` or ``"iceberg"`` in flowconfig.toml, SensorFlow announces a
version of the table, not a digest: ``"<version>@<table id>"`` for Delta, the snapshot id for
Iceberg, as the Parameter named by ``[sensor] payload_key``. This flow pins its read to it, so
the data it trains on is the data the sensor saw, even if the table moved on since, and the
version stays an artifact of the run (a rerun with the same parameter reads the same rows).

It lives under examples/ so that ``./deploy`` and ``flowproject dev``, which take the
repository's top-level flows, do not pick it up; deploy it like StarterFlow when you use it.
It reads the repository's flowconfig.toml (none next to it: see ``flowconfig_next_to_flow``):

    python examples/table_version_flow.py run --data_version 12@5485e822-...
    python examples/table_version_flow.py argo-workflows create

A Delta version can be vacuumed later: the event also carries ``latest_version``, and a flow
that must not fail can fall back to it (not done here: a model should say which data it saw).
"""

import os

from metaflow import config_expr, current, project, step

from flowproject import BaseFlow, sensor_trigger


def read_delta_version(uri, value):
    """The rows of the Delta table ``uri`` at the version in ``value`` (``"12@<table id>"``)."""
    from deltalake import DeltaTable

    version, _, table_id = value.partition("@")
    table = DeltaTable(uri, version=int(version), storage_options=delta_storage_options())
    if table_id and table.metadata().id != table_id:
        raise ValueError(
            "%s was re-created since version %s was announced (table id %s, announced %s)"
            % (uri, version, table.metadata().id, table_id)
        )
    return table.to_pyarrow_table()


def delta_storage_options(env=None):
    """The ``deltalake`` options for the S3 endpoint the sensor reads, when it is not AWS.

    The sensor's boto3 client follows ``AWS_ENDPOINT_URL_S3``, ``AWS_ENDPOINT_URL``, then
    ``METAFLOW_S3_ENDPOINT_URL``; ``deltalake`` (Rust's object_store) reads only
    ``AWS_ENDPOINT_URL`` and refuses a plain http:// endpoint unless ``AWS_ALLOW_HTTP`` is
    set. So the same endpoint is handed over, and http is allowed for a loopback endpoint
    (a local test server such as moto). For http to any other host set ``AWS_ALLOW_HTTP=true``
    yourself.
    """
    from urllib.parse import urlsplit

    env = os.environ if env is None else env
    names = ("AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL", "METAFLOW_S3_ENDPOINT_URL")
    endpoint = next((env[name] for name in names if env.get(name)), None)
    if not endpoint:
        return {}
    options = {"AWS_ENDPOINT_URL": endpoint}
    parts = urlsplit(endpoint)
    if parts.scheme == "http" and parts.hostname in ("127.0.0.1", "localhost", "::1"):
        options["AWS_ALLOW_HTTP"] = "true"
    return options


def read_iceberg_snapshot(data, value):
    """The rows of the Iceberg table of ``data`` (``[data]``) at snapshot ``value``."""
    snapshot_id = int(value)
    if "location" in data:
        from pyiceberg.table import StaticTable

        from flowproject.sources import iceberg

        table = StaticTable.from_metadata(_newest_metadata(data, iceberg))
    else:
        from pyiceberg.catalog import load_catalog

        table = load_catalog(data["catalog"]).load_table(data["table"])
    return table.scan(snapshot_id=snapshot_id).to_arrow()


def _newest_metadata(data, iceberg):
    with iceberg.open_session(data) as session:
        key = iceberg.newest_metadata(session, data)
    return "s3://%s/%s" % (data["bucket"], key)


@project(name=config_expr("flowconfig.project_name"))
@sensor_trigger  # Parameter <payload_key>, and @trigger on the sensor's event when deployed
class TableVersionFlow(BaseFlow):
    @step
    def start(self):
        """Read the table at the announced version, and keep the version as an artifact."""
        data = self.flowconfig.data
        key = self.flowconfig.sensor.payload_key
        self.table_version = getattr(self, key)
        if not self.table_version:
            raise ValueError("run with --%s <announced value>" % key)
        if data["type"] == "delta":
            rows = read_delta_version(data["uri"], self.table_version)
        elif data["type"] == "iceberg":
            rows = read_iceberg_snapshot(dict(data), self.table_version)
        else:
            raise ValueError("[data] type = %r is not a table format" % data["type"])
        self.row_count = rows.num_rows
        print(
            "Read %d rows of version %s (project %s, branch %s)"
            % (self.row_count, self.table_version, current.project_name, current.branch_name)
        )
        self.next(self.end)

    @step
    def end(self):
        """Where a training flow would fit a model on the rows read above."""
        print("Trained on version %s: %d rows" % (self.table_version, self.row_count))


if __name__ == "__main__":
    TableVersionFlow()
