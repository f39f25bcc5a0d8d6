"""qorch: the Unified Quantum Orchestrator.

A Kubernetes operator that schedules `Task`s onto fleets of AI `Agent`s with a
quantum-inspired batch scheduler. See DESIGN in the project's docs/.
"""

__all__ = ["__version__"]

__version__ = "0.1.0"
