"""adapter.samples: reading a real worker's exposition, and refusing what is not one."""

from __future__ import annotations

import pytest
from prometheus_client import generate_latest

from adapter.samples import MalformedScrape, parse_samples
from pushserver.exposition import ProcessCollector, WorkerIdentity, worker_registry
from pushserver.stats import WorkerStats


def test_a_workers_own_exposition_reads_back_exactly():
    stats = WorkerStats(connected=8285, connect_total=21958809)
    stats.events_received.update({"joinByGameId": 7, "visibilityChange": 3})
    text = generate_latest(
        worker_registry(stats, WorkerIdentity("push-a", 1, "0.1.0"), ProcessCollector())
    ).decode()
    samples = parse_samples(text)
    assert samples["socket_io_connected"] == {(): 8285.0}
    assert samples["socket_io_connect_total"] == {(): 21958809.0}
    assert samples["socket_io_events_received_total"] == {
        (("event", "joinByGameId"),): 7.0,
        (("event", "visibilityChange"),): 3.0,
    }
    assert "process_resident_memory_bytes" in samples


@pytest.mark.parametrize(
    "text",
    [
        "socket_io_connected not-a-number\n",
        'socket_io_connected{event="unclosed} 1\n',
        "<html><body>502 Bad Gateway</body></html>\n",
    ],
    ids=["bad-value", "bad-labels", "html"],
)
def test_what_is_not_prometheus_text_is_refused(text):
    with pytest.raises(MalformedScrape, match="malformed metrics text"):
        parse_samples(text)


def test_an_empty_body_has_no_samples():
    assert parse_samples("") == {}


def _exposition() -> str:
    stats = WorkerStats(connected=12_345, connect_total=99)
    stats.events_received.update({"joinByGameId": 7})
    stats.disconnects_by_reason.update({"transport close": 4, "ping timeout": 1})
    return generate_latest(
        worker_registry(stats, WorkerIdentity("push-a", 3, "0.1.0"), ProcessCollector())
    ).decode()


@pytest.mark.parametrize(
    ("text", "fast"),
    [
        (_exposition(), True),
        ('m{a="1",b="2"} 3\nm{b="1",a="2"} 4.5e3\nn +Inf\n', True),
        ('m{a="x\\"y"} 1\n', False),
        ("m 1 1700000000000\n", False),
        ('m{a="1"} 2 # {trace_id="x"} 1\n', False),
    ],
    ids=["a-workers-exposition", "label-order-and-floats", "escaped-label", "timestamp",
         "exemplar"],
)  # fmt: skip
def test_the_fast_path_answers_what_prometheus_clients_parser_answers(text, fast):
    from adapter.samples import _full, _plain

    assert (_plain(text) is not None) is fast, "the plain form takes the fast path, nothing else"
    if fast:
        assert parse_samples(text) == _full(text)
