"""Secrets of an Iceberg catalog's configuration never appear in a message (issue 19 #3),
redacted by structure: the credentials of any URI-looking property (up to the last ``@``),
and every secret-named property, whether or not the URI parses."""

import pytest
from test_iceberg_source import CATALOG, catalog, config_text  # noqa: F401 (fixture)

from flowproject.config import parse_flowconfig
from flowproject.exceptions import SourceError
from flowproject.sources import iceberg

pytest.importorskip("pyiceberg")


def check_raises(catalog_name, table="db.events"):
    data = parse_flowconfig(config_text(table=table, catalog=catalog_name))["data"]
    with pytest.raises(SourceError) as raised:
        with iceberg.open_session(data) as session:
            iceberg.check(data, session)
    return str(raised.value)


def test_unencoded_at_in_a_database_password_is_redacted(monkeypatch, tmp_path):
    """pg8000 (not installed here) fails to connect to the host SQLAlchemy parsed, which,
    with an unencoded '@' in the password, begins with the password's second half."""
    import pyiceberg.catalog.sql
    from sqlalchemy.engine import make_url

    def connect_like_pg8000(uri, **kwargs):
        url = make_url(uri)
        raise ConnectionError(
            "Can't create a connection to host %s and port %s (timeout is None and "
            "source_address is None)." % (url.host, url.port)
        )

    monkeypatch.setenv("PYICEBERG_HOME", str(tmp_path))
    monkeypatch.setenv("PYICEBERG_CATALOG__PROD__TYPE", "sql")
    monkeypatch.setenv(
        "PYICEBERG_CATALOG__PROD__URI", "postgresql+pg8000://sensor:Sup3r@S3cret@127.0.0.1:1/db"
    )
    monkeypatch.setattr(pyiceberg.catalog, "_ENV_CONFIG", pyiceberg.utils.config.Config())
    monkeypatch.setattr(pyiceberg.catalog.sql, "create_engine", connect_like_pg8000)
    message = check_raises("prod")
    assert "Sup3r" not in message and "S3cret" not in message
    assert message.startswith("Could not load pyiceberg catalog 'prod'")
    assert "to host [redacted]@127.0.0.1 and port 1" in message


@pytest.mark.parametrize(
    "uri, shown",
    [
        # Parsed as the URI it is: user, password, host.
        ("postgresql://sensor:hunter22@db.internal/x", "postgresql://[redacted]@db.internal/x"),
        # Unencoded '@' and ':' in the password: everything before the last '@' goes.
        ("mysql://sensor:pa55@w0rd:x9z@q7r@db.internal/x", "mysql://[redacted]@db.internal/x"),
        # A token as the whole user part.
        ("https://ghp_0123456789abcdef@rest.internal/v1", "https://[redacted]@rest.internal/v1"),
    ],
)
def test_uri_credentials_are_redacted_wherever_the_message_quotes_them(uri, shown):
    secrets = iceberg.catalog_secrets({"uri": uri})
    host = uri.rsplit("@", 1)[1]
    parts = uri.split("://", 1)[1].rsplit("@", 1)[0]
    # The URI quoted whole, and its pieces quoted the way a driver splits them.
    driver_host = uri.split("://", 1)[1].split("@", 1)[-1]
    error = ValueError("cannot open %s; host %s; login %s" % (uri, driver_host, parts))
    text = iceberg.scrub(error, secrets)
    assert shown in text and host in text and parts not in text
    for piece in parts.replace("@", ":").split(":")[1:]:
        assert piece not in text, text


def test_secret_named_properties_are_redacted_from_table_errors(catalog, monkeypatch):
    """A catalog that loads, then fails on the table, quoting its credential."""

    def fail(identifier):
        raise RuntimeError("token exchange failed for client-id:Cl13ntS3cret (401)")

    monkeypatch.setenv("PYICEBERG_CATALOG__LAKE__CREDENTIAL", "client-id:Cl13ntS3cret")
    import pyiceberg.catalog
    import pyiceberg.catalog.sql

    monkeypatch.setattr(pyiceberg.catalog, "_ENV_CONFIG", pyiceberg.utils.config.Config())
    monkeypatch.setattr(pyiceberg.catalog.sql.SqlCatalog, "load_table", lambda self, i: fail(i))
    message = check_raises(CATALOG)
    assert "Cl13ntS3cret" not in message and "testing-secret" not in message
    assert message.startswith("Could not load Iceberg table db.events from catalog 'lake'")
