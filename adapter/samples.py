"""One worker's /metrics text as `Samples` for `adapter.aggregate` (pure).

The scraper calls `parse_samples` on every body, hundreds of times a second, so the common case
takes a fast path: every line is either a comment or a sample in the plain form a push server
writes (`name{label="value",...} value`), checked strictly by one regular expression. A body
with anything else in it (escaped label values, timestamps, exemplars, HTML, garbage) goes to
prometheus_client's own parser, which reads the whole text format or raises. The fast path is
10x cheaper than the full parser on a worker's ~5 KB (bench/adapter.py), and a test holds the
two to the same answers.

Text that parses is still not trusted blindly: a series twice in one body (two exporters
behind one port?), a family the adapter reads declared with another TYPE than the push
server's, or one of its values that is not a finite count (NaN, ±Inf, negative, or past 2^53
where a float64 sum stops being exact) makes the whole body `UntrustedScrape`, and the
worker's pod is left out with the reason, never served a number built on it.
"""

from __future__ import annotations

import math
import re
from collections import defaultdict
from collections.abc import Mapping

from prometheus_client.parser import text_string_to_metric_families

from adapter.aggregate import Reason, Samples
from adapter.catalog import READ_TYPES
from adapter.errors import clip

_NAME = r"[a-zA-Z_:][a-zA-Z0-9_:]*"
_LABEL = r'[a-zA-Z_][a-zA-Z0-9_]*="[^"\\\n]*"'
VALUE_PATTERN = r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?|[+-]?Inf|NaN"
PLAIN_SAMPLE = re.compile(
    rf"({_NAME})(?:\{{((?:{_LABEL})(?:,{_LABEL})*,?)?\}})?[ \t]+({VALUE_PATTERN})[ \t]*"
)
LABEL_PAIR = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="([^"]*)"')
_TYPE = re.compile(r"^#[ \t]+TYPE[ \t]+(\S+)[ \t]+(\S+)", re.MULTILINE)
_WIRE_NAME = re.compile(rf"^{_NAME}", re.MULTILINE)
# Every integer up to 2^53 is a float64; past it a sum of counts silently loses units.
MAX_EXACT = float(2**53)
# prometheus_client's parser costs ~0.2 s per MB (bench/adapter_garbage.py: four workers of
# one pod serving a 1 MB line stretched every round to ~0.9 s). A push server writes ~5 KB in
# the plain form, so a body that needs the full parser and is bigger than this is not one.
MAX_FULL_PARSE_CHARS = 64 * 1024
# One regular-expression match holds the GIL throughout: ~14 ms on a 1 MB line, which API
# requests on the serving thread wait out (bench/adapter_garbage.py: API p99 12 → 24 ms). A push
# server's longest sample line is a few hundred characters; longer ones leave the fast path.
MAX_PLAIN_LINE_CHARS = 4096

Labels = tuple[tuple[str, str], ...]
SeriesMap = dict[Labels, float]


class UntrustedScrape(ValueError):
    """A body the adapter takes no number from; `kind` is the exclusion reason's code, the
    message says what was wrong, quoting at most a short prefix of the body."""

    def __init__(self, kind: Reason, message: str) -> None:
        super().__init__(message)
        self.kind: Reason = kind


class MalformedScrape(UntrustedScrape):
    """A body that is not Prometheus text."""

    def __init__(self, message: str) -> None:
        super().__init__("malformed", message)


def parse_samples(text: str, read_types: Mapping[str, str] = READ_TYPES) -> Samples:
    """Sample name → {sorted label pairs → value}. Sample names, not family names: a counter
    is `socket_io_connect_total`, as it appears on the wire and in the API. `read_types`: the
    families whose TYPE and values are checked (name → "gauge" or "counter")."""
    fast = _read_plain(text)
    if fast is None:
        if len(text) > MAX_FULL_PARSE_CHARS:
            raise MalformedScrape(
                f"malformed metrics text: {len(text)} characters not in the plain form a push "
                f"server writes (the full parser reads at most {MAX_FULL_PARSE_CHARS})"
            )
        samples, types = _full(text), _TYPE.findall(text)
    else:
        samples, types = fast
    _check(samples, types, read_types)
    return samples


def _plain(text: str) -> Samples | None:
    """The fast path's samples, or None if the body is not in the plain form."""
    fast = _read_plain(text)
    return None if fast is None else fast[0]


# Label sets seen, as their sorted pairs. A worker writes the same few dozen every round, so
# most lines skip the label regex and the sort; bounded, so a target inventing new ones each
# round costs only the uncached work.
_KEYS: dict[str, Labels] = {}
_KEYS_MAX = 4096


def _read_plain(text: str) -> tuple[Samples, list[tuple[str, str]]] | None:
    """The fast path: the samples and the (family, type) of every TYPE line, or None as soon
    as a line is not in the plain form. One pass over the lines: a regular expression scanning
    the whole body for line starts costs more than the split (bench/adapter.py)."""
    samples: defaultdict[str, SeriesMap] = defaultdict(dict)
    types: list[tuple[str, str]] = []
    duplicate: str | None = None
    keys = _KEYS
    sample_line, type_line = PLAIN_SAMPLE.fullmatch, _TYPE.match
    for line in text.split("\n"):
        if not line:
            continue
        if line[0] == "#":
            if "TYPE" in line and (declared := type_line(line)) is not None:
                types.append((declared[1], declared[2]))
            continue
        if len(line) > MAX_PLAIN_LINE_CHARS:
            return None
        match = sample_line(line)
        if match is None:
            return None
        name, labels, value = match.groups()
        if not labels:
            key: Labels = ()
        elif (cached := keys.get(labels)) is not None:
            key = cached
        else:
            pairs = LABEL_PAIR.findall(labels)
            if len(dict(pairs)) != len(pairs):
                return None  # a label named twice: the full parser says why it is malformed
            key = tuple(sorted(pairs))
            if len(keys) < _KEYS_MAX:
                keys[labels] = key
        series = samples[name]
        if key in series and duplicate is None:
            # Said only once the whole body is plain, so both paths refuse alike.
            duplicate = _series(name, key)
        series[key] = float(value)
    if duplicate is not None:
        raise UntrustedScrape("duplicate_series", f"{duplicate} appears twice")
    return dict(samples), types


def _full(text: str) -> Samples:
    samples: defaultdict[str, SeriesMap] = defaultdict(dict)
    try:
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                key = tuple(sorted(sample.labels.items()))
                series = samples[sample.name]
                if key in series:
                    raise UntrustedScrape(
                        "duplicate_series", f"{_series(sample.name, key)} appears twice"
                    )
                series[key] = float(sample.value)
    except (ValueError, TypeError, IndexError) as exc:
        if isinstance(exc, UntrustedScrape):
            raise
        raise MalformedScrape(f"malformed metrics text: {clip(str(exc))}") from exc
    # prometheus_client renames a sample `x` under `# TYPE x counter` to `x_total`: a name
    # the worker never wrote must not stand in for one it did.
    on_wire = set(_WIRE_NAME.findall(text))
    for name in samples:
        if name not in on_wire:
            raise MalformedScrape(f"malformed metrics text: no sample is named {clip(name)}")
    return dict(samples)


def _check(samples: Samples, types: list[tuple[str, str]], read_types: Mapping[str, str]) -> None:
    """Refuse a body whose families the adapter reads carry a wrong TYPE or a value that is
    not a count."""
    for name, kind in types:
        expected = read_types.get(name)
        if expected is not None and kind != expected:
            raise UntrustedScrape(
                "wrong_type",
                f"{name} is declared a {clip(kind)}, the push server's is a {expected}",
            )
    for name in read_types:
        for labels, value in samples.get(name, {}).items():
            if not math.isfinite(value):
                raise UntrustedScrape("not_finite", f"{_series(name, labels)} is {value}")
            if value < 0:
                raise UntrustedScrape("negative", f"{_series(name, labels)} is {value:g}")
            if value > MAX_EXACT:
                raise UntrustedScrape(
                    "out_of_range", f"{_series(name, labels)} is {value:g}, over 2^53"
                )


def _series(name: str, labels: Labels) -> str:
    pairs = ",".join(f'{key}="{value}"' for key, value in labels)
    return clip(f"{name}{{{pairs}}}" if labels else name)
