"""The operator: informers, the store, leader election, the lifecycle rules, the loop and the writer.

Only the Lease holder decides; every status write is compare-and-set. The
scheduler core it calls is pure (`qorch.scheduler`). Nothing is imported
here, so that a module of this package (the API transport, say) can be used
without loading kopf: `qorch.controller.runner` is the operator's entry point.
"""
