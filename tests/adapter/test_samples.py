"""adapter.samples: reading a real worker's exposition, and refusing what is not one."""

from __future__ import annotations

import pytest
from prometheus_client import generate_latest

from adapter.samples import MalformedScrape, UntrustedScrape, parse_samples
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


HEAD = "# TYPE socket_io_connected gauge\n"


@pytest.mark.parametrize(
    ("text", "kind", "words"),
    [
        (HEAD + "socket_io_connected NaN\n", "not_finite", "socket_io_connected is nan"),
        (HEAD + "socket_io_connected +Inf\n", "not_finite", "socket_io_connected is inf"),
        (HEAD + "socket_io_connected -Inf\n", "not_finite", "socket_io_connected is -inf"),
        (HEAD + "socket_io_connected -3\n", "negative", "socket_io_connected is -3"),
        ('socket_io_events_sent_total{event="x"} -1\n', "negative", 'event="x"'),
        (HEAD + "socket_io_connected 1e300\n", "out_of_range", "over 2^53"),
        (HEAD + "socket_io_connected 1\nsocket_io_connected 2\n", "duplicate_series",
         "socket_io_connected appears twice"),
        ('m{a="1",b="2"} 1\nm{b="2",a="1"} 1\n', "duplicate_series", "appears twice"),
        ('m{a="x\\"y"} 1\nm{a="x\\"y"} 2\n', "duplicate_series", "appears twice"),
        ("# TYPE socket_io_connected counter\nsocket_io_connected 4\n", "wrong_type",
         "declared a counter, the push server's is a gauge"),
        ("# TYPE socket_io_connected histogram\nsocket_io_connected 4\n", "wrong_type",
         "declared a histogram"),
        ("# TYPE socket_io_connect_total gauge\nsocket_io_connect_total 4\n", "wrong_type",
         "declared a gauge, the push server's is a counter"),
        # prometheus_client would read this `x` as `x_total`: not a sample the worker wrote.
        ("# TYPE socket_io_connect counter\nsocket_io_connect 5 1000\n", "malformed",
         "no sample is named socket_io_connect_total"),
        ("socket_io_connected " + "9" * 60_000 + "x\n", "malformed", "…"),
        ("socket_io_connected 1" + " " * 100_000 + "x\n", "malformed",
         "100023 characters not in the plain form"),
        ("\x00\x01\ufffd\ufffd binary\n", "malformed", "malformed metrics text"),
    ],
    ids=["nan", "plus-inf", "minus-inf", "negative-gauge", "negative-counter", "past-2^53",
         "duplicate", "duplicate-label-order", "duplicate-full-path", "gauge-as-counter",
         "gauge-as-histogram", "counter-as-gauge", "renamed-by-the-parser", "huge-line",
         "huge-body", "binary"],
)  # fmt: skip
def test_text_that_parses_but_cannot_be_trusted_is_refused_with_its_code(text, kind, words):
    with pytest.raises(UntrustedScrape) as refused:
        parse_samples(text)
    assert refused.value.kind == kind
    assert words in str(refused.value)
    assert len(str(refused.value)) < 300, "a huge body makes a short reason"


@pytest.mark.parametrize(
    "text",
    [
        "process_cpu_seconds_total NaN\nsocket_io_connected 1\n",
        '# TYPE go_gc_duration_seconds summary\ngo_gc_duration_seconds{quantile="0.5"} NaN\n',
        "# TYPE other_thing counter\nother_thing_total -1\n",
        HEAD + "socket_io_connected 0\n",
        HEAD + f"socket_io_connected {2**53}\n",
    ],
    ids=["nan-in-an-unread-family", "nan-quantile", "negative-unread", "zero", "2^53"],
)
def test_families_the_adapter_does_not_read_are_not_judged(text):
    parse_samples(text)


def test_a_long_line_leaves_the_fast_path_and_a_long_body_then_is_refused():
    from adapter.samples import MAX_PLAIN_LINE_CHARS, _plain

    line = 'm{a="' + "x" * MAX_PLAIN_LINE_CHARS + '"} 1\n'
    assert _plain(line) is None
    assert parse_samples(line) == {"m": {(("a", "x" * MAX_PLAIN_LINE_CHARS),): 1.0}}
    with pytest.raises(MalformedScrape, match="not in the plain form"):
        parse_samples(line * 20)
