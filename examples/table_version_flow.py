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

Incremental: the announcement also says which versions it covers (``self.sensor_changes()
.versions``: from the previously announced version, exclusive, to this one), so a run reads
only the new rows: Delta's change data feed (``load_cdf``) over the range when the table has
it on, else the data files the range's commits added (listed in the manifest); for Iceberg an
incremental append scan (the files each append snapshot of the range added). A first check,
``--force-trigger`` or a run by hand has no range: the whole version is read. A change this
flow already processed (the same event delivered again) is skipped.
"""

import os

from metaflow import config_expr, current, project, step

from flowproject import BaseFlow, sensor_trigger


def read_delta_version(uri, value):
    """The rows of the Delta table ``uri`` at the version in ``value`` (``"12@<table id>"``)."""
    from deltalake import DeltaTable, QueryBuilder

    version, _, table_id = value.partition("@")
    table = DeltaTable(uri, version=int(version), storage_options=delta_storage_options())
    if table_id and table.metadata().id != table_id:
        raise ValueError(
            "%s was re-created since version %s was announced (table id %s, announced %s)"
            % (uri, version, table.metadata().id, table_id)
        )
    # deltalake's own reader (DataFusion, in Rust). Not to_pyarrow_table(): pyarrow's threads
    # reading through deltalake's Python filesystem aborted the process at exit now and then
    # ("terminate called without an active exception"), after the rows were read.
    return QueryBuilder().register("announced", table).execute("SELECT * FROM announced").read_all()


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


def read_new_delta_rows(uri, changes):
    """Only the rows of the announced range of the Delta table ``uri``.

    With change data feed on (``delta.enableChangeDataFeed``): ``load_cdf`` over the range,
    inserts, updates and deletes, each row with its ``_change_type``. Without: the rows of the
    data files the range's commits added (appends; an update or a delete also removed files,
    which the manifest lists as ``removed``, and whose rows are then not read).

    A compaction (OPTIMIZE) in the range rewrote some added files into others without
    changing their rows: the last version no longer lists them, but they stay in storage until
    a VACUUM, so they are read from the earlier versions that list them.
    """
    import pyarrow as pa
    from deltalake import DeltaTable

    first, last = changes.versions
    options = delta_storage_options()
    table = DeltaTable(uri, version=last, storage_options=options)
    if table.metadata().configuration.get("delta.enableChangeDataFeed") == "true":
        return pa.table(table.load_cdf(starting_version=first + 1, ending_version=last))
    removed = {change.key for change in changes if change.kind == "removed"}
    wanted = [change.key for change in changes if change.kind == "added"]
    wanted = [key for key in wanted if key not in removed]
    parts = []
    version = last
    while wanted and version > first:
        # One table load per earlier version, and only while some added file is not found:
        # when nothing was compacted, the last version lists them all.
        dataset = (
            table if version == last else DeltaTable(uri, version, options)
        ).to_pyarrow_dataset()
        for fragment in dataset.get_fragments():
            key = next((k for k in wanted if fragment.path.endswith(k)), None)
            if key is not None:
                parts.append(_read_data_file(dataset, fragment))
                wanted.remove(key)
        version -= 1
    if wanted:
        raise ValueError(
            "%d data file(s) of versions %d to %d are no longer in %s (vacuumed?): %s"
            % (len(wanted), first + 1, last, uri, ", ".join(wanted[:3]))
        )
    if not parts:
        return table.to_pyarrow_dataset().schema.empty_table()
    return pa.concat_tables(parts, promote_options="default")


def _read_data_file(dataset, fragment):
    """One data file of a Delta ``dataset``, with the dataset's columns (partition values
    filled in, columns the file predates as nulls).

    Read in this thread, without pre-buffering: a scan on pyarrow's I/O threads through
    deltalake's Python filesystem aborted the process at exit now and then ("terminate
    called without an active exception"), after the rows were read.
    """
    import pyarrow as pa
    import pyarrow.dataset as ds
    import pyarrow.parquet as pq

    with dataset.filesystem.open_input_file(fragment.path) as f:
        rows = pq.read_table(f, pre_buffer=False, use_threads=False)
    partition = ds.get_partition_keys(fragment.partition_expression)
    columns = []
    for field in dataset.schema:
        if field.name in rows.column_names:
            columns.append(rows.column(field.name))
        elif field.name in partition:
            columns.append(pa.array([partition[field.name]] * rows.num_rows, field.type))
        else:
            columns.append(pa.nulls(rows.num_rows, field.type))
    return pa.Table.from_arrays(columns, names=dataset.schema.names)


def iceberg_table(data):
    """The Iceberg table of ``data`` (``[data]``): its catalog's, or its newest metadata."""
    if "location" in data:
        from pyiceberg.table import StaticTable

        from flowproject.sources import iceberg

        return StaticTable.from_metadata(_newest_metadata(data, iceberg))
    from pyiceberg.catalog import load_catalog

    return load_catalog(data["catalog"]).load_table(data["table"])


def read_iceberg_snapshot(data, value):
    """The rows of the Iceberg table of ``data`` (``[data]``) at snapshot ``value``."""
    return iceberg_table(data).scan(snapshot_id=int(value)).to_arrow()


def read_new_iceberg_rows(table, first, last):
    """An incremental append scan: the rows the append snapshots after snapshot ``first`` up
    to ``last`` added (a pyiceberg ``Table``)."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    from pyiceberg.table.snapshots import ancestors_of

    parts = []
    for snapshot in ancestors_of(table.snapshot_by_id(last), table.metadata):
        if snapshot.snapshot_id == first:
            break
        if snapshot.summary is None or snapshot.summary.operation.value != "append":
            continue
        for entry in table.inspect.entries(snapshot_id=snapshot.snapshot_id).to_pylist():
            added_here = entry["status"] == 1 and entry["snapshot_id"] == snapshot.snapshot_id
            if added_here and entry["data_file"]["content"] == 0:  # data, not deletes
                with table.io.new_input(entry["data_file"]["file_path"]).open() as f:
                    parts.append(pq.read_table(f))
    if not parts:
        return table.schema().as_arrow().empty_table()
    return pa.concat_tables(parts)


def _newest_metadata(data, iceberg):
    with iceberg.open_session(data) as session:
        key = iceberg.newest_metadata(session, data)
    return "s3://%s/%s" % (data["bucket"], key)


@project(name=config_expr("flowconfig.project_name"))
@sensor_trigger  # Parameter <payload_key>, and @trigger on the sensor's event when deployed
class TableVersionFlow(BaseFlow):
    @step
    def start(self):
        """Read the new rows of the announced range (or the whole announced version)."""
        data = self.flowconfig.data
        key = self.flowconfig.sensor.payload_key
        self.table_version = getattr(self, key)
        if not self.table_version:
            raise ValueError("run with --%s <announced value>" % key)
        if self.sensor_duplicate:  # this change was processed already: end says so
            self.next(self.end)
            return
        versions = self.sensor_changes().versions
        self.incremental = versions is not None and versions[0] is not None
        if data["type"] == "delta" and self.incremental:
            rows = read_new_delta_rows(data["uri"], self.sensor_changes())
        elif data["type"] == "delta":
            rows = read_delta_version(data["uri"], self.table_version)
        elif data["type"] == "iceberg" and self.incremental:
            rows = read_new_iceberg_rows(iceberg_table(dict(data)), *versions)
        elif data["type"] == "iceberg":
            rows = read_iceberg_snapshot(dict(data), self.table_version)
        else:
            raise ValueError("[data] type = %r is not a table format" % data["type"])
        self.row_count = rows.num_rows
        print(
            "Read %d %srows of version %s (project %s, branch %s)"
            % (
                self.row_count,
                "new " if self.incremental else "",
                self.table_version,
                current.project_name,
                current.branch_name,
            )
        )
        self.next(self.end)

    @step
    def end(self):
        """Where a training flow would fit a model on the rows read above."""
        if self.sensor_duplicate:
            print("Version %s was processed already: nothing read" % self.table_version)
        else:
            print("Trained on version %s: %d rows" % (self.table_version, self.row_count))


if __name__ == "__main__":
    TableVersionFlow()
