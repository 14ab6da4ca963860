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
