"""The pushscale adapter: the Kubernetes custom metrics API over exact per-pod sums.

Not built yet (issue 3); the package exists so the distribution's layout is final.
"""
