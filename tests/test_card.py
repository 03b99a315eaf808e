"""The sensor card: data shown as text (never as HTML), what is watched, one colour per outcome.

The card is built and rendered to its real HTML in process (Metaflow's blank card); when
Chromium is installed the page is also loaded headless and its DOM inspected.
"""

import base64
import glob
import json
import os
import re
import shutil
import subprocess
from html.parser import HTMLParser
from types import SimpleNamespace

import pytest
from conftest import s3_config
from metaflow.plugins.cards.card_modules.basic import BlankCard

from flowproject.cards import (
    OUTCOME_COLORS,
    history_chart,
    outcome,
    render_sensor_card,
    watched,
)
from flowproject.sensor import SensorState, advance, decide
from flowproject.sources.observation import Observation
from flowproject.sources.s3_listing import diff_listings, parse_listing

FLOW, BRANCH = "SensorFlow", "user.alice"
HOSTILE_KEY = "x<img src=x onerror=alert(1)>.csv"
HOSTILE_VALUE = "</td>`<b>bold</b>` <img src=y onerror=alert(2)> | *x* _y_"
HOSTILE_WARNING = "<img src=z onerror=alert(3)>"


def announced(value, run="SensorFlow/1"):
    o = Observation(value, {})
    d = decide(o, SensorState(), FLOW, BRANCH)
    return advance(SensorState(), o, d, run, published=True, at="2026-01-01T00:00:00Z")


def hostile_card(key=HOSTILE_KEY, value=HOSTILE_VALUE, **decision_extra):
    """Components of a check that saw a hostile object key and a hostile query value."""
    state = announced("<i>old</i>")
    o = Observation(value, {"objects": 2})
    d = decide(o, state, FLOW, BRANCH, settle_checks=1)
    for name, value in decision_extra.items():
        object.__setattr__(d, name, value)  # a field a newer Decision may carry
    after = advance(state, o, d, "SensorFlow/2", published=False, at="2026-01-01T00:05:00Z")
    changes = diff_listings(
        parse_listing(["a.csv\t1\tt\te"]),
        parse_listing(["a.csv\t1\tt\te", key + "\t1\tt\te"]),
    )
    card = []
    render_sensor_card(
        card,
        o,
        d,
        after,
        None,
        "data_updated",
        False,
        changes=changes,
        settle_checks=1,
        branch=BRANCH,
        watching="s3://bucket/<b>prefix</b>/ (files_metadata)",
    )
    return [c.render() for c in card]


def markdown_texts(components):
    return [c["source"] for c in components if c["type"] == "markdown"]


def card_html(components):
    """The card's real HTML, as Metaflow writes it for the step."""
    task = SimpleNamespace(pathspec="SensorFlow/2/end/3", finished=True)
    return BlankCard(components=components).render(task)


def card_data(html):
    """The components the card's JavaScript draws (Metaflow embeds them base64'd)."""
    encoded = re.search(r'__MF_DATA__\["[^"]+"\] = "([A-Za-z0-9+/=]+)"', html)
    assert encoded, "no embedded card data found"
    return json.loads(base64.b64decode(encoded.group(1)))


def tags(html):
    """``(tag, {attribute: value})`` of every element of an HTML document."""
    found = []

    class Collector(HTMLParser):
        def handle_starttag(self, tag, attrs):
            found.append((tag, dict(attrs)))

    Collector().feed(html)
    return found


def leaves(components):
    """The drawn components of a card's data, out of their pages and sections."""
    for component in components:
        if "contents" in component:
            yield from leaves(component["contents"])
        else:
            yield component


def test_data_from_the_source_is_never_markdown():
    components = hostile_card(warning=HOSTILE_WARNING)
    rendered = json.dumps(components)
    for text in (HOSTILE_KEY, HOSTILE_VALUE, HOSTILE_WARNING, "<i>old</i>", "<b>prefix</b>"):
        assert json.dumps(text)[1:-1] in rendered, "%r is not on the card" % text
        for markdown in markdown_texts(components):
            assert text not in markdown
    # Markdown holds only our text: no tag from the data, no backtick code spans of values.
    for markdown in markdown_texts(components):
        assert "<img" not in markdown and "<b>" not in markdown and "<i>" not in markdown


def test_the_real_card_html_embeds_the_data_only_as_table_text():
    html = card_html(hostile_card(warning=HOSTILE_WARNING))
    assert HOSTILE_KEY not in html and "onerror=alert" not in html  # only base64'd data
    page = list(leaves(card_data(html)["components"]))
    cells = [cell for c in page if c["type"] == "table" for row in c["data"] for cell in row]
    assert HOSTILE_KEY in cells
    assert any(HOSTILE_VALUE in str(cell) for cell in cells)
    assert ["Warning", HOSTILE_WARNING] in [
        row for c in page if c["type"] == "table" for row in c["data"]
    ]
    for component in page:
        if component["type"] == "markdown":
            assert "onerror" not in component["source"]


def test_in_a_browser_hostile_keys_and_values_are_text_not_tags(tmp_path):
    chromium = next(
        filter(None, map(shutil.which, ("chromium", "chromium-browser", "google-chrome"))), None
    )
    if chromium is None:
        pytest.skip("no Chromium here to load the card headless")
    # Markdown would run these (quoted attributes; a backtick ends a code span). They mark
    # the page rather than alert(), which would hang the headless browser.
    mark = "document.body.setAttribute('data-injected', %d)"
    card = hostile_card(
        key='x`<img src="x" onerror="%s">`.csv' % (mark % 1),
        value='<img src="y" onerror="%s">' % (mark % 2),
        warning='<details open ontoggle="%s">w</details>' % (mark % 3),
    )
    page = tmp_path / "card.html"
    page.write_text(card_html(card))
    argv = [chromium, "--headless", "--no-sandbox", "--disable-gpu"]
    argv += ["--virtual-time-budget=5000", "--dump-dom", page.as_uri()]
    try:
        result = subprocess.run(argv, capture_output=True, text=True, timeout=120)
    except subprocess.TimeoutExpired:
        pytest.fail("the headless browser did not finish loading the card")
    dom = result.stdout
    assert "Sensor check" in dom, result.stderr[-2000:]
    elements = tags(dom)
    assert not [a for t, a in elements if t == "body" and "data-injected" in a], "a handler ran"
    injected = [(t, a) for t, a in elements if any(name.startswith("on") for name in a)]
    assert not injected, "elements with injected handlers: %s" % injected
    assert 'x`&lt;img src="x" onerror=' in dom  # the key, shown as text
    assert '&lt;img src="y" onerror=' in dom  # the value, shown as text
    assert "&lt;details open ontoggle=" in dom  # the warning, shown as text
    # The headline's marker is drawn in the outcome's colour.
    assert '<h1><span style="color: %s">\u25cf</span> Sensor check: Settling' % (
        OUTCOME_COLORS["settling"]
    ) in dom.replace("\n", "")


def test_the_card_says_what_is_watched():
    rows = [row for c in hostile_card() if c["type"] == "table" for row in c["data"]]
    assert ["Watched", "s3://bucket/<b>prefix</b>/ (files_metadata)"] in rows
    s3 = {"type": "s3", "bucket": "b", "key": "events/", "check_mode": "etag"}
    assert watched(s3) == "s3://b/events/ (etag)"
    snowflake = {
        "type": "snowflake",
        "template": "row_count",
        "connection_name": "analytics",
        "params": {"table": "T"},
    }
    text = watched(snowflake)
    assert "row_count" in text and "connection_name 'analytics'" in text


def test_one_colour_per_outcome_on_every_card():
    # Two histories with different outcomes in a different order: the same colour each.
    first = [{"at": "t1", "kind": "unchanged"}, {"at": "t2", "kind": "changed", "published": 1}]
    second = [{"at": "t1", "kind": "changed", "failed": True}, {"at": "t2", "kind": "settling"}]
    for history in (first, second):
        color = history_chart(history)["layer"][-1]["encoding"]["color"]
        assert color["field"] == "outcome"
        scale = color["scale"]
        assert dict(zip(scale["domain"], scale["range"], strict=True)) == OUTCOME_COLORS
    values = [v["outcome"] for v in history_chart(first + second)["data"]["values"]]
    assert values == ["no event", "published", "failed", "settling"]
    # The headline's marker has the colour of the check's outcome.
    state = announced("v1")
    o = Observation("v2", {})
    d = decide(o, state, FLOW, BRANCH)
    published = {"id": "e1"}
    assert outcome(d, published, False) == "published"
    card = []
    render_sensor_card(card, o, d, state, published, "ev", False, branch=BRANCH)
    assert OUTCOME_COLORS["published"] in card[0].render()["source"]


@pytest.mark.e2e
@pytest.mark.cards
def test_a_runs_card_shows_the_watched_source_and_the_key_as_text(
    flow_runner, webhook, s3_client, bucket
):
    s3_client.put_object(Bucket=bucket, Key="in/" + HOSTILE_KEY, Body=b"a,b")
    flow_runner.write_config(s3_config(bucket, "in/", "files_metadata"))
    result = flow_runner.run()
    assert result.returncode == 0, result.stdout + result.stderr
    (html,) = glob.glob(
        os.path.join(flow_runner.workdir, ".metaflow", "mf.cards", "**", "blank-sensor-*.html"),
        recursive=True,
    )
    page = list(leaves(card_data(open(html).read())["components"]))
    rows = [row for c in page if c["type"] == "table" for row in c["data"]]
    assert ["Watched", "s3://%s/in/ (files_metadata)" % bucket] in rows
    assert [HOSTILE_KEY] in rows
    assert not [c for c in page if c["type"] == "markdown" and "onerror" in c["source"]]
