"""The qorch API: pydantic models of the CRDs, enums and constants.

The bottom layer: it imports nothing from the rest of qorch.
"""

__all__: list[str] = []
