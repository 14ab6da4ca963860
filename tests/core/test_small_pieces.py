"""Small pure helpers: URL redaction, bearer checks, frame sizes."""

from __future__ import annotations

import pytest

from pushserver.logs import redact_url
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
    import logging

    from pushserver.logs import LogLimiter

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
