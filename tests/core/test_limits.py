"""limits: which host limits cannot carry the configured connections."""

from __future__ import annotations

from pathlib import Path

import pytest

from pushserver.limits import HostLimits, limit_warnings, read_host_limits

ROOMY = HostLimits(
    open_files_soft=1_048_576,
    open_files_hard=1_048_576,
    somaxconn=4096,
    local_port_range=(1024, 65535),
    conntrack_max=1_000_000,
)


def test_a_roomy_host_has_no_warnings():
    assert limit_warnings(ROOMY, workers=4, max_connections=15_000, backlog=4096) == []


@pytest.mark.parametrize(
    ("change", "words"),
    [
        (
            {"open_files_soft": 10_000, "open_files_hard": 20_000},
            "open-file limit 10000 (hard 20000)",
        ),
        ({"somaxconn": 128}, "net.core.somaxconn is 128"),
        ({"local_port_range": (32768, 60999)}, "local port range 32768-60999"),
        ({"conntrack_max": 50_000}, "nf_conntrack_max is 50000"),
    ],
    ids=["fd-limit", "somaxconn", "port-range", "conntrack"],
)
def test_each_tight_limit_is_named(change, words):
    limits = HostLimits(**{**ROOMY.__dict__, **change})
    [warning] = limit_warnings(limits, workers=4, max_connections=15_000, backlog=4096)
    assert words in warning


def test_connections_still_in_http_count_against_the_file_limit():
    limits = HostLimits(**{**ROOMY.__dict__, "open_files_soft": 17_000})
    assert limit_warnings(limits, workers=4, max_connections=15_000, backlog=4096) == []
    [warning] = limit_warnings(
        limits, workers=4, max_connections=15_000, backlog=4096, http_connections=4096
    )
    assert "below the 19160 a worker needs" in warning


def test_unknown_limits_are_not_guessed():
    limits = HostLimits(1_048_576, 1_048_576, None, None, None)
    assert limit_warnings(limits, workers=4, max_connections=15_000, backlog=4096) == []


def test_reading_a_proc_tree(tmp_path: Path):
    for name, text in {
        "sys/net/core/somaxconn": "4096\n",
        "sys/net/ipv4/ip_local_port_range": "32768\t60999\n",
    }.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    limits = read_host_limits(tmp_path)
    assert limits.somaxconn == 4096
    assert limits.local_port_range == (32768, 60999)
    assert limits.conntrack_max is None
