"""The pushscale adapter: the Kubernetes custom metrics API over exact per-pod sums.

In progress (issue 3). Its pure core so far: `selectors` (label selectors) and `quantity`
(Quantity strings). See docs/architecture.md.
"""
