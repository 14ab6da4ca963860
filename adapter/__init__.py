"""The pushscale adapter: the Kubernetes custom metrics API over exact per-pod sums.

In progress (issue 3). Its pure core so far: `selectors` (label selectors), `quantity`
(Quantity strings), `samples` (a worker's /metrics text read back), `aggregate` (a pod's exact
value from its workers, or why it is left out), `rates` (counter rates over a window) and
`wire` (the API's JSON documents); its first shell, `scrape`. See docs/architecture.md.
"""
