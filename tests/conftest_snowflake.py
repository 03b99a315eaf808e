"""Fixtures for the Snowflake tests: a loopback fakesnow server and a seeded table.

Imported by ``test_snowflake_*.py`` (``from conftest_snowflake import ...``), so the S3 tests
never start fakesnow. One server per session (per xdist worker), not one per file that uses
it. fakesnow's server shares one in-memory database between connections: each test gets its
own database name, so tests cannot see each other's tables.
"""

import os
import uuid

import pytest

from flowproject.testing import FakesnowServer


@pytest.fixture(scope="session")  # one per xdist worker, started by the first test using it
def fakesnow_server(tmp_path_factory):
    log = tmp_path_factory.mktemp("fakesnow") / "fakesnow.log"
    with FakesnowServer(log_path=str(log)) as server:
        yield server


class Warehouse(object):
    """A database of its own on the fakesnow server, with an ``EVENTS`` table."""

    def __init__(self, server):
        self.server = server
        self.database = "DB_%s" % uuid.uuid4().hex[:8].upper()
        self.schema = "PUBLIC"
        self.table = "%s.%s.EVENTS" % (self.database, self.schema)

    def execute(self, sql, params=None):
        connection = self.server.connect(database=self.database, schema=self.schema)
        try:
            cursor = connection.cursor()
            cursor.execute(sql, params)
            return cursor.fetchall() if cursor.description else None
        finally:
            connection.close()

    def create(self):
        connection = self.server.connect()
        try:
            cursor = connection.cursor()
            cursor.execute("CREATE DATABASE %s" % self.database)
            cursor.execute("CREATE SCHEMA %s.%s" % (self.database, self.schema))
            cursor.execute(
                "CREATE TABLE %s (id INTEGER, name VARCHAR, amount NUMBER(10, 2), "
                "loaded_at TIMESTAMP_NTZ)" % self.table
            )
        finally:
            connection.close()
        return self

    def insert(self, *rows):
        for row in rows:
            self.execute("INSERT INTO %s VALUES (%%s, %%s, %%s, %%s)" % self.table, row)


@pytest.fixture
def warehouse(fakesnow_server):
    return Warehouse(fakesnow_server).create()


@pytest.fixture
def snowflake_home(tmp_path, fakesnow_server, warehouse, monkeypatch):
    """A SNOWFLAKE_HOME whose connections.toml has entry ``fakesnow`` for the test's database.

    fakesnow needs a current database and schema even for qualified names, so the entry
    sets them (as a real connection usually does).
    """
    home = tmp_path / "snowflake-home"
    fakesnow_server.write_connections_toml(
        str(home), database=warehouse.database, schema=warehouse.schema
    )
    monkeypatch.setenv("SNOWFLAKE_HOME", str(home))
    for name in list(os.environ):
        if name.startswith("SNOWFLAKE_") and name != "SNOWFLAKE_HOME":
            monkeypatch.delenv(name)
    return home
