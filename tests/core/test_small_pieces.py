"""Small pure helpers: URL redaction, bearer checks, frame sizes, log limits."""

from __future__ import annotations

import logging
from typing import Any

import pytest

from pushkit.logs import LogLimiter, RepeatFilter, redact_url
from pushserver.routes import bearer_token_matches


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("redis://127.0.0.1:6379/0", "redis://127.0.0.1:6379/0"),
        ("redis://:pw@redis:6379/0", "redis://:***@redis:6379/0"),
        ("rediss://user:pw@redis/1", "rediss://user:***@redis/1"),
    ],
    ids=["no-password", "password-only", "user-and-password"],
)
def test_redact_url(url, shown):
    assert redact_url(url) == shown


@pytest.mark.parametrize(
    ("header", "ok"),
    [
        ("Bearer right-token", True),
        ("bearer right-token", True),
        ("Bearer wrong-token", False),
        ("Bearer right-token-and-more", False),
        ("Basic right-token", False),
        ("right-token", False),
        (None, False),
    ],
)
def test_bearer(header, ok):
    assert bearer_token_matches(header, "right-token") is ok


def test_log_limiter_says_one_line_per_cause_per_interval_and_counts_the_rest(caplog):
    now = [0.0]
    limiter = LogLimiter(logging.getLogger("limited"), interval=10.0, clock=lambda: now[0])
    with caplog.at_level(logging.INFO, logger="limited"):
        for _ in range(1000):
            limiter.warning("bad_json", "socket %s sent bad JSON", "sid")
        limiter.warning("too_deep", "socket %s nested too deep", "sid")
        now[0] = 10.0
        limiter.warning("bad_json", "socket %s sent bad JSON", "sid")
    lines = [r.getMessage() for r in caplog.records]
    assert lines == [
        "socket sid sent bad JSON",
        "socket sid nested too deep",
        "socket sid sent bad JSON (and 999 more like it in the last 10 s)",
    ]


def test_a_library_logger_says_each_line_once_per_interval(caplog: Any) -> None:
    now = [0.0]
    logger = logging.getLogger("per_request_library")
    logger.addFilter(RepeatFilter(interval=10.0, clock=lambda: now[0]))
    with caplog.at_level(logging.INFO, logger="per_request_library"):
        for peer in range(500):
            logger.warning("Invalid HTTP request received from %s.", peer)
        now[0] = 10.0
        logger.warning("Invalid HTTP request received from %s.", "last")
    assert [r.getMessage() for r in caplog.records] == [
        "Invalid HTTP request received from 0.",
        "Invalid HTTP request received from last. (and 499 more like it in the last 10 s)",
    ]


def test_the_log_limiter_table_is_bounded_even_if_causes_are_not() -> None:
    limiter = LogLimiter(logging.getLogger("unbounded"), interval=60.0, clock=lambda: 0.0)
    logged = sum(limiter.admit(f"cause-{i}") is not None for i in range(10_000))
    # 256 causes of their own, then one shared by all the rest.
    assert logged == 257
