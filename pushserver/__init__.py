"""The pushscale push server: an instrumented, multi-worker python-socketio server.

Main path: `cli.main` → `supervisor.Supervisor` (binds ports, starts Redis, runs workers) →
`worker` processes, each serving `engine` (websockets) under `push.PushServer` (socket.io),
`routes` (health, publish, metrics, shed) and `shedding` (drain, rebalancing). The pure core —
`settings`, `payloads`, `ratelimit`, `pacing`, `limits`, `restarts`, `websocket`, `stats` — has
no I/O. See docs/architecture.md.
"""
