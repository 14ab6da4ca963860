"""Property tests for every adapter parser of outside input (hypothesis).

Three parsers read what the adapter does not control: `adapter.samples` (a worker's /metrics
body), `adapter.selectors` (the `labelSelector` and `metricLabelSelector` of a request) and
`adapter.pods.parse_static_pods` (the laptop file). For each: whatever the input, the only
exception out is the parser's documented one, and valid input generated from a model parses
back to that model exactly.
"""

from __future__ import annotations

import math

import pytest
import yaml
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from adapter.aggregate import WorkerReading, pod_reading
from adapter.catalog import READ_TYPES
from adapter.pods import MAX_PORT, MAX_WORKERS, StaticPodsError, parse_static_pods
from adapter.samples import MAX_EXACT, UntrustedScrape, _full, _plain, parse_samples
from adapter.selectors import Requirement, SelectorError, parse_selector
from pushserver.exposition import Combine

# CI machines vary; a slow example is not a failure of the property.
PROPERTY = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# --- a worker's /metrics text -------------------------------------------------------------

NAMES = st.from_regex(r"[a-zA-Z_:][a-zA-Z0-9_:]{0,20}", fullmatch=True) | st.sampled_from(
    sorted(READ_TYPES)
)
# Names prometheus_client reads back as written (it reserves `__`-prefixed label names).
LABEL_NAMES = st.from_regex(r"[a-zA-Z][a-zA-Z0-9_]{0,10}", fullmatch=True)
PLAIN_VALUES = st.text(st.characters(blacklist_characters='"\\\n', codec="utf-8"), max_size=12)
COUNTS = st.integers(0, 2**53).map(float) | st.floats(0, MAX_EXACT, allow_nan=False)
Series = dict[tuple[tuple[str, str], ...], float]


@st.composite
def bodies(draw: st.DrawFn, label_values: st.SearchStrategy[str] = PLAIN_VALUES):
    """A model (sample name → {labels → value}) and nothing else: the text is rendered from it."""
    model: dict[str, Series] = {}
    for name in draw(st.lists(NAMES, max_size=6, unique=True)):
        series: Series = {}
        for labels in draw(
            st.lists(st.dictionaries(LABEL_NAMES, label_values, max_size=3), max_size=4)
        ):
            series[tuple(sorted(labels.items()))] = draw(COUNTS)
        if series:
            model[name] = series
    return model


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def render(model: dict[str, Series], timestamps: bool = False) -> str:
    lines = []
    for name, series in model.items():
        if name in READ_TYPES:
            lines.append(f"# TYPE {name} {READ_TYPES[name]}")
        for labels, value in series.items():
            pairs = ",".join(f'{key}="{_escape(text)}"' for key, text in labels)
            stamp = " 1700000000000" if timestamps else ""
            lines.append(
                f"{name}{{{pairs}}} {value!r}{stamp}" if pairs else f"{name} {value!r}{stamp}"
            )
        # A HELP line after the samples is a comment to both paths.
        lines.append(f"# HELP {name} what it counts")
    return "\n".join(lines) + "\n"


@PROPERTY
@given(st.text(max_size=400))
def test_any_text_is_samples_or_untrusted_scrape(text):
    try:
        samples = parse_samples(text)
    except UntrustedScrape as refused:
        assert refused.kind in {"malformed", "not_finite", "negative", "out_of_range",
                                "duplicate_series", "wrong_type"}  # fmt: skip
        assert len(str(refused)) < 400
    else:
        for name in READ_TYPES:
            assert all(
                math.isfinite(v) and 0 <= v <= MAX_EXACT for v in samples.get(name, {}).values()
            )


# Pieces of the text format, so random bodies get past the first character.
PIECES = st.sampled_from(
    ["socket_io_connected", "socket_io_connect_total", "pushscale_worker_info", "m", "{", "}",
     '="', '"', ",", " ", "\t", "\n", "# TYPE ", "# HELP ", "gauge", "counter", "histogram",
     "NaN", "+Inf", "-Inf", "-1", "0", "7", "1e300", "\\", "worker", "le", "#", "\x00", "\ufffd"]
)  # fmt: skip


@PROPERTY
@given(st.lists(PIECES, max_size=60).map("".join))
def test_text_format_fragments_are_samples_or_untrusted_scrape(text):
    try:
        parse_samples(text)
    except UntrustedScrape:
        pass


@PROPERTY
@given(bodies())
def test_plain_bodies_read_back_exactly_on_both_paths(model):
    text = render(model)
    assert _plain(text) is not None, "the plain form takes the fast path"
    assert parse_samples(text) == model
    assert _full(text) == model


@PROPERTY
@given(bodies(st.text(max_size=8)), st.booleans())
def test_escaped_labels_and_timestamps_read_back_exactly(model, timestamps):
    assert parse_samples(render(model, timestamps)) == model


@PROPERTY
@given(st.lists(st.integers(0, 2**40), min_size=1, max_size=8))
def test_a_pods_count_is_the_exact_sum_of_its_workers_bodies(counts):
    readings = [
        WorkerReading(worker, 1.0, parse_samples(render({"socket_io_connected": {(): float(n)}})))
        for worker, n in enumerate(counts)
    ]
    reading = pod_reading(
        len(counts), readings, "socket_io_connected", parse_selector(None), Combine.SUM
    )
    assert reading.value == sum(counts)


@PROPERTY
@given(bodies(), st.data())
def test_a_series_written_twice_is_always_refused(model, data):
    named = [(name, labels) for name, series in model.items() for labels in series]
    if not named:
        return
    name, labels = data.draw(st.sampled_from(named))
    text = render(model) + render({name: {labels: 1.0}})
    with pytest.raises(UntrustedScrape) as refused:
        parse_samples(text)
    assert refused.value.kind == "duplicate_series"


# --- label selectors ----------------------------------------------------------------------

KEYS = st.from_regex(
    r"(?:[a-z0-9](?:[-a-z0-9.]{0,10}[a-z0-9])?/)?[A-Za-z0-9](?:[-A-Za-z0-9_.]{0,10}[A-Za-z0-9])?",
    fullmatch=True,
)
VALUES = st.from_regex(r"(?:[A-Za-z0-9](?:[-A-Za-z0-9_.]{0,10}[A-Za-z0-9])?)?", fullmatch=True)


@st.composite
def requirements(draw: st.DrawFn) -> tuple[Requirement, str]:
    key = draw(KEYS)
    operator = draw(st.sampled_from(["=", "==", "!=", "in", "notin", "exists", "!exists"]))
    if operator in ("=", "==", "!="):
        value = draw(VALUES)
        space = draw(st.sampled_from(["", " "]))
        text = f"{key}{space}{operator}{space}{value}"
        return Requirement(key, "notin" if operator == "!=" else "in", frozenset({value})), text
    if operator in ("in", "notin"):
        values = draw(st.lists(VALUES, min_size=1, max_size=4))
        if values == [""]:
            values = ["x"]  # `in ()` is refused on purpose: at least one value
        return Requirement(
            key, operator, frozenset(values)
        ), f"{key} {operator} ({', '.join(values)})"
    return Requirement(key, operator), key if operator == "exists" else f"!{key}"


@PROPERTY
@given(st.text(max_size=200))
def test_any_selector_text_is_a_selector_or_selector_error(text):
    try:
        parse_selector(text)
    except SelectorError as refused:
        assert len(str(refused)) < 400


@PROPERTY
@given(st.lists(st.sampled_from(list("a=!(), \tinotx/.-_")) | KEYS, max_size=30).map("".join))
def test_selector_fragments_are_a_selector_or_selector_error(text):
    try:
        parse_selector(text)
    except SelectorError:
        pass


@PROPERTY
@given(st.lists(requirements(), min_size=1, max_size=5), st.dictionaries(KEYS, VALUES, max_size=5))
def test_a_rendered_selector_parses_back_and_matches_as_its_model(parts, labels):
    selector = parse_selector(",".join(text for _, text in parts))
    model = tuple(requirement for requirement, _ in parts)
    assert selector.requirements == model
    expected = all(
        (r.key in labels) if r.operator == "exists"
        else (r.key not in labels) if r.operator == "!exists"
        else (labels.get(r.key) in r.values) == (r.operator == "in")
        for r in model
    )  # fmt: skip
    assert selector.matches(labels) is expected


# --- the static pods file -----------------------------------------------------------------

YAML_LEAVES = (
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats() | st.text(max_size=10)
)
YAML_TREES = st.recursive(
    YAML_LEAVES,
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(
            st.sampled_from(
                [
                    "pods",
                    "services",
                    "name",
                    "namespace",
                    "ip",
                    "labels",
                    "selector",
                    "metricsPort",
                    "workers",
                    "deployment",
                    "other",
                ]
            )
            | st.text(max_size=5),
            children,
            max_size=6,
        )
    ),
    max_leaves=30,
)


@PROPERTY
@given(st.text(max_size=300))
# Found by hand, past what the generator reaches: PyYAML recursing out of stack.
@example("[" * 100_000)
@example("pods: " + "{a: " * 3000)
def test_any_text_is_an_inventory_or_static_pods_error(text):
    try:
        parse_static_pods(text)
    except StaticPodsError:
        pass


@PROPERTY
@given(YAML_TREES)
def test_any_yaml_document_is_an_inventory_or_static_pods_error(document):
    try:
        parse_static_pods(yaml.safe_dump(document))
    except StaticPodsError:
        pass


NAMES_K8S = st.from_regex(r"[a-z0-9](?:[-a-z0-9]{0,10}[a-z0-9])?", fullmatch=True)
IPS = st.ip_addresses().map(str)


@st.composite
def static_pod_entries(draw: st.DrawFn) -> dict[str, object]:
    workers = draw(st.integers(1, MAX_WORKERS))
    entry: dict[str, object] = {
        "namespace": draw(NAMES_K8S),
        "name": draw(NAMES_K8S),
        "labels": draw(st.dictionaries(KEYS, VALUES, max_size=3)),
        "ip": draw(IPS),
        "metricsPort": draw(st.integers(1, MAX_PORT - workers + 1)),
        "workers": workers,
    }
    if draw(st.booleans()):
        entry["deployment"] = draw(NAMES_K8S)
    return entry


@PROPERTY
@given(st.lists(static_pod_entries(), max_size=8, unique_by=lambda e: (e["namespace"], e["name"])))
def test_a_valid_file_gives_back_every_pod_exactly(entries):
    inventory = parse_static_pods(yaml.safe_dump({"pods": entries}))
    assert len(inventory.pods) == len(entries)
    for pod, entry in zip(inventory.pods, entries, strict=True):
        assert (pod.namespace, pod.name, dict(pod.labels), pod.ip) == (
            entry["namespace"], entry["name"], entry["labels"], entry["ip"]
        )  # fmt: skip
        assert (pod.metrics_port, pod.workers, pod.deployment) == (
            entry["metricsPort"], entry["workers"], entry.get("deployment")
        )  # fmt: skip
        assert pod.excluded is None
