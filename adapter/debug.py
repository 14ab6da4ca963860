"""The debug view (`GET /debug/pods`): what the adapter sees, per pod and per worker (pure).

For the person on call with curl: each pod's value or the reason it is left out, every
worker's value, scrape time and error, and the exact metrics API URL the HPA calls for the
pod's labels. `adapter.app` serves it as a text table, or as JSON with `?format=json`. A
left-out pod shows its reason's code (`reasonCode`, docs/adapter.md "Exclusion reasons") beside
the words; a bug met while describing one pod shows as that pod's `internal_error`, never as a
failed page.
"""

from __future__ import annotations

import math
import urllib.parse
from collections.abc import Sequence
from typing import Any

from adapter.aggregate import left_out, matching_sum
from adapter.answers import PodValue, Report, Round, each_pod_value, ignore
from adapter.catalog import ServedMetric
from adapter.pods import Pod
from adapter.selectors import Selector
from adapter.wire import GROUP, rfc3339

# Labels the pod template does not carry; a Deployment's selector never names them.
_POD_ONLY_LABELS = ("pod-template-hash", "controller-revision-hash")


def hpa_url(pod: Pod, metric: str) -> str:
    """The request the HPA makes for a Deployment whose selector is this pod's labels."""
    labels = ",".join(
        f"{key}={value}" for key, value in sorted(pod.labels.items()) if key not in _POD_ONLY_LABELS
    )
    query = f"?labelSelector={urllib.parse.quote(labels, safe='=,')}" if labels else ""
    return f"/apis/{GROUP}/v1beta2/namespaces/{pod.namespace}/pods/*/{metric}{query}"


def debug_document(
    rounds: Sequence[Round],
    metric: ServedMetric,
    metric_selector: Selector,
    window_seconds: float,
    now: float,
    report: Report = ignore,
) -> dict[str, Any]:
    if not rounds:
        return {"metric": metric.name, "round": None, "pods": []}
    latest = rounds[-1]
    pods = []
    values = each_pod_value(latest.pods, rounds, metric, metric_selector, window_seconds, report)
    for pod, value in zip(latest.pods, values, strict=True):
        try:
            workers = _workers(pod, latest, metric, metric_selector)
            hpa = hpa_url(pod, metric.name)
        except Exception as exc:
            report(pod, exc)
            value = PodValue(
                pod, left_out("internal_error", f"internal error: {type(exc).__name__}")
            )
            workers, hpa = [], None
        pods.append(
            {
                "namespace": pod.namespace,
                "name": pod.name,
                "ip": pod.ip,
                "expectedWorkers": pod.workers,
                "served": value.reading.value is not None,
                "value": value.reading.value,
                "reason": value.reading.reason,
                "reasonCode": value.reading.code,
                "workers": workers,
                "hpaUrl": hpa,
            }
        )
    return {
        "metric": metric.name,
        "round": {
            "number": latest.number,
            "startedAt": rfc3339(latest.started_at),
            "ageSeconds": round(now - latest.started_at, 3),
            "durationSeconds": round(latest.duration_seconds, 4),
        },
        "pods": pods,
    }


def _workers(
    pod: Pod, latest: Round, metric: ServedMetric, metric_selector: Selector
) -> list[dict[str, Any]]:
    workers = []
    for reading in latest.readings.get((pod.namespace, pod.name), ()):
        series = None if reading.samples is None else reading.samples.get(metric.sample)
        workers.append(
            {
                "worker": reading.worker,
                "url": pod.metrics_url(reading.worker),
                "value": None if series is None else matching_sum(series, metric_selector),
                "scrapedAt": rfc3339(reading.scraped_at),
                "error": reading.error,
                "errorCode": reading.error_kind,
            }
        )
    return workers


def debug_text(document: dict[str, Any]) -> str:
    """The same document as a table for a terminal."""
    round_ = document["round"]
    if round_ is None:
        return f"{document['metric']}: no scrape round has finished yet\n"
    lines = [
        f"{document['metric']} · round {round_['number']} started {round_['startedAt']} "
        f"({round_['ageSeconds']:.1f} s ago, took {round_['durationSeconds'] * 1000:.0f} ms)",
        "",
    ]
    for pod in document["pods"]:
        state = (
            _number(pod["value"])
            if pod["served"]
            else f"LEFT OUT: {pod['reason']} [{pod['reasonCode']}]"
        )
        lines.append(f"{pod['namespace']}/{pod['name']} ({pod['ip']}, {pod['expectedWorkers']} "
                     f"workers)  {state}")  # fmt: skip
        for worker in pod["workers"]:
            detail = _number(worker["value"])
            if worker["error"]:
                detail = f"{worker['error']} [{worker['errorCode']}]"
            lines.append(f"  worker {worker['worker']}  {worker['url']:<36} {detail}")
        if pod["hpaUrl"] is not None:
            lines.append(f"  HPA asks: {pod['hpaUrl']}")
    if not document["pods"]:
        lines.append("no pods discovered")
    return "\n".join(lines) + "\n"


def _number(value: float | None) -> str:
    if value is None:
        return "-"
    if not math.isfinite(value):
        return str(value)  # never served, but the page must not fail on it
    return f"{value:.0f}" if value == int(value) else f"{value:.3f}"
