"""The quick schema check: the usual valid document never imports jsonschema, and the check
never calls an invalid document valid."""

import json
import os
import subprocess
import sys

import pytest
from conftest import REPO, s3_config

from flowproject.config import SENSOR_SCHEMA
from flowproject.schema_check import surely_valid
from flowproject.state import STATE_SCHEMA, check_state_document

PROBE = """
import json, sys
from flowproject import parse_flowconfig
from flowproject.state import check_state_document
parse_flowconfig(open(sys.argv[1]).read())
check_state_document(json.loads(sys.argv[2]))
print(json.dumps(sorted(m for m in sys.modules if m.split(".")[0] == "jsonschema")))
"""

STATE = {
    "version": 2,
    "scope": {"flow": "SensorFlow", "project": None, "branch": "user.x", "source": "default"},
    "identity": {"bucket": "b"},
    "baseline": {"value": "v1", "fingerprint": "f", "change_id": "c", "run": "SensorFlow/1"},
    "pending": None,
    "history": [{"kind": "first"}],
    "claim": None,
}


def test_a_valid_config_and_state_do_not_import_jsonschema(tmp_path):
    config = tmp_path / "flowconfig.toml"
    config.write_text(s3_config("my-ml-data", "events/", "files_metadata"))
    env = dict(os.environ, PYTHONPATH=REPO)
    argv = [sys.executable, "-c", PROBE, str(config), json.dumps(STATE)]
    out = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout.strip().splitlines()[-1]) == []


@pytest.mark.parametrize(
    "doc",
    [
        dict(STATE, version=True),
        dict(STATE, version=2.0),
        dict(STATE, history="not a list"),
        dict(STATE, history=["not an object"]),
        dict(STATE, baseline={"value": "v1", "fingerprint": "f"}),
        dict(STATE, baseline=dict(STATE["baseline"], extra=1)),
        dict(STATE, pending={"value": None, "fingerprint": "f", "seen": -1}),
        dict(STATE, scope={"flow": 3}),
    ],
)
def test_an_unsure_state_document_goes_to_jsonschema(doc):
    from jsonschema import Draft202012Validator

    assert not surely_valid(doc, STATE_SCHEMA)
    errors = list(Draft202012Validator(STATE_SCHEMA).iter_errors(doc))
    if errors:
        with pytest.raises(Exception, match=".+: .+"):
            check_state_document(doc)
    else:  # a float 2.0 is an integer to JSON Schema: valid, only checked the slow way
        check_state_document(doc)


@pytest.mark.parametrize(
    "sensor, valid",
    [
        ({"cron_schedule": "* * * * *", "event_name": "e", "payload_key": "k"}, True),
        ({"cron_schedule": "* * * * *", "event_name": "e", "payload_key": "k", "typo": 1}, False),
        ({"cron_schedule": "* * * * *", "event_name": "e"}, False),
        ({"cron_schedule": 5, "event_name": "e", "payload_key": "k"}, False),
    ],
)
def test_sure_only_of_valid_config_tables(sensor, valid):
    assert surely_valid(sensor, SENSOR_SCHEMA) is valid
