"""`pushscale demo`: the whole system on one machine, with live viewers.

`cli` (the command) → `settings` (flags) → `stack` (the processes; `processes` for /proc) →
`live` (the refresh loop) → `board` (what is shown, pure). The viewers themselves are
`pushscale.loadgen` agents, each holding many `pushkit.sioclient` connections.
"""
