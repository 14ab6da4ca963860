"""adapter.selectors: the Kubernetes label selector grammar, as tables."""

from __future__ import annotations

import pytest

from adapter.selectors import SelectorError, parse_selector

POD = {"app": "push", "tier": "edge", "pushscale.io/scrape": "true"}


@pytest.mark.parametrize(
    ("selector", "matches"),
    [
        (None, True),
        ("", True),
        ("app=push", True),
        ("app==push", True),
        ("app = push", True),
        ("app!=push", False),
        ("app!=other", True),
        ("missing!=x", True),
        ("app=other", False),
        ("app", True),
        ("!app", False),
        ("!missing", True),
        ("app in (push, web)", True),
        ("app in (web)", False),
        ("app notin (web,api)", True),
        ("missing notin (a)", True),
        ("missing in (a)", False),
        ("app=push,tier=edge", True),
        ("app=push,tier in (core)", False),
        ("pushscale.io/scrape=true", True),
        ("app=push, tier notin (core, db), !canary", True),
        ("version=", False),
    ],
    ids=lambda v: repr(v),
)
def test_matching(selector, matches):
    assert parse_selector(selector).matches(POD) is matches


@pytest.mark.parametrize(
    ("selector", "words"),
    [
        ("app in (a", "unbalanced '('"),
        ("app in a)", "unbalanced ')'"),
        ("app in ()", "needs at least one value"),
        ("app=push,", "empty requirement"),
        ("-bad=1", "invalid label key"),
        ("app=has space", "invalid label"),
        ("app=" + "x" * 64, "invalid label value"),
        ("Example.COM/app=1", "invalid label key"),
        ("app=a/b", "invalid label value"),
    ],
    ids=[
        "open-paren",
        "close-paren",
        "empty-set",
        "trailing-comma",
        "bad-key",
        "space",
        "value-too-long",
        "uppercase-prefix",
        "slash-in-value",
    ],
)
def test_malformed(selector, words):
    with pytest.raises(SelectorError) as caught:
        parse_selector(selector)
    assert words in str(caught.value)
