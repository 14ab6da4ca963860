"""The pushscale push server: an instrumented, multi-worker python-socketio server.

Main path: `cli.main` → `supervisor.Supervisor` (binds ports, starts Redis, runs workers) →
`worker` processes, each serving `push.PushServer` (socket.io), `routes` (health, publish) and
`exposition` (its own /metrics). The pure core — `settings`, `payloads`, `ratelimit`,
`restarts`, `stats` — has no I/O. See docs/architecture.md.
"""
