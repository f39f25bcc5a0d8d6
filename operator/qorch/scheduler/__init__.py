"""The scheduler core: pure numpy + stdlib, no kopf and no Kubernetes client.

It is a function of a snapshot, so it runs, is tested and is benchmarked with
no cluster at all.
"""

__all__: list[str] = []
