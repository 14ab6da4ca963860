"""One worker's /metrics text as `Samples` for `adapter.aggregate` (pure).

The scraper (issue 3) passes each body it fetched; prometheus_client's own parser reads the text
format, so there is no second parser to keep in step with the exposition side. Anything that
does not parse raises `MalformedScrape`, which leaves that worker's pod out with the reason.
"""

from __future__ import annotations

from collections import defaultdict

from prometheus_client.parser import text_string_to_metric_families

from adapter.aggregate import Samples


class MalformedScrape(ValueError):
    """A body that is not Prometheus text; the message is the exclusion reason."""


def parse_samples(text: str) -> Samples:
    """Sample name → {sorted label pairs → value}. Sample names, not family names: a counter
    is `socket_io_connect_total`, as it appears on the wire and in the API."""
    samples: dict[str, dict[tuple[tuple[str, str], ...], float]] = defaultdict(dict)
    try:
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                samples[sample.name][tuple(sorted(sample.labels.items()))] = float(sample.value)
    except (ValueError, TypeError, IndexError) as exc:
        raise MalformedScrape(f"malformed metrics text: {exc}") from exc
    return dict(samples)
