"""The companion controller and the HPA model it and the simulator share.

`hpa` is a pure port of the Kubernetes HorizontalPodAutoscaler controller's arithmetic for `Pods`
and `Object` metrics with an `AverageValue` target: the replica calculation, the stabilization
windows, the scaling policies and the min/max clamps, with the controller's own reasons. The
simulator drives it once per sync period to replay traffic; the companion controller (scale-down
hysteresis that understands reconnect storms) asks it what the HPA will do next. See
docs/architecture.md.
"""
