"""Test helpers that ship with qorch, for our tests and our users'.

The pytest plugin (`qorch.testing.plugin`, registered as a pytest11 entry
point) gives a session-scoped real control plane, a fresh namespace per test,
kubeconfigs per user, and a `kubectl` runner. Nothing starts unless a test
asks for one of these fixtures. `qorch.testing.invariants` checks, straight
from the API, the invariants every run must keep (I1-I5; see the README).
"""

from qorch.testing.kubectl import Kubectl, KubectlError

__all__ = ["Kubectl", "KubectlError"]
