"""The Python SDK: submit, read, wait for and decide on Tasks, typed with the qorch.api models.

`Client` is async; `SyncClient` wraps it for scripts and notebooks. Bad input is
refused here, before any request, with a `ClientError` naming the field and the fix.
"""

from qorch.client.client import FINAL, Client, ClientError, SyncClient, TaskView

__all__ = ["FINAL", "Client", "ClientError", "SyncClient", "TaskView"]
