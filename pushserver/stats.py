"""A worker's counters as plain data: the hot path adds to ints, a scrape reads them.

`pushserver.push`, `pushserver.fanout`, `pushserver.engine` and `pushserver.routes` write to
the one `WorkerStats` of their worker; `pushserver.exposition` turns it into Prometheus families
at scrape time. Keeping plain ints (no locks, no label lookups) makes an event cost a few
additions, and makes a scrape cost O(series), never O(connections): nothing here grows with the
number of sockets.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field


@dataclass
class WorkerStats:
    connected: int = 0
    # Open engine.io sessions: `connected` plus those that have not joined a namespace yet.
    # They are what fills `--max-connections`.
    engine_sessions: int = 0
    # Open engine.io sessions by (transport, engine.io protocol version): ("polling", "3").
    sockets: Counter[tuple[str, str]] = field(default_factory=Counter)
    # Connections handed to the worker that owns their session (`pushserver.handoff`), by
    # result: "ok", or why not.
    handoffs: Counter[str] = field(default_factory=Counter)
    # Open connections still speaking HTTP (not upgraded to a websocket), per port.
    http_connections: Counter[str] = field(default_factory=Counter)
    connect_total: int = 0
    disconnect_total: int = 0
    # socket.io-prometheus-metrics counts one error per bad thing a client did; the reason
    # breakdown is in `client_errors`.
    errors_total: int = 0
    events_received: Counter[str] = field(default_factory=Counter)
    events_sent: Counter[str] = field(default_factory=Counter)
    receive_bytes: int = 0
    transmit_bytes: int = 0
    client_errors: Counter[str] = field(default_factory=Counter)
    disconnects_by_reason: Counter[str] = field(default_factory=Counter)
    rejected_connections: Counter[str] = field(default_factory=Counter)
    shed_total: int = 0
    publishes: Counter[str] = field(default_factory=Counter)
    draining: bool = False
    # Whether Redis has confirmed this worker's subscription to the fan-out channel right now.
    redis_subscribed: bool = False
    redis_subscription_losses: int = 0
    # Messages on the fan-out channel dropped unread, by `fanout_messages.REJECT_REASONS`.
    redis_messages_rejected: Counter[str] = field(default_factory=Counter)

    def client_error(self, reason: str) -> None:
        self.errors_total += 1
        self.client_errors[reason] += 1
