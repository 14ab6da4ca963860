"""`pushscale simulate`: traffic replayed through the HPA model, with and without the controller.

`cli` parses flags and picks scenarios (`scenarios`); `run` drives one scenario per variant
second by second through `cluster` (pods, load balancer, drain, rebalancing, reconnecting clients
after `backoff`), `adapter.controller.hpa` (the HPA) and `adapter.controller.policy` (the
controller); `summary` turns the timelines into the comparison and `plot` draws them.
Counts, not objects per client: a day of a 1.6M-connection cluster runs in seconds.
"""
