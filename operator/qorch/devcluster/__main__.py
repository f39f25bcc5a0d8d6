"""`python -m qorch.devcluster serve`: the background control plane's supervisor."""

from __future__ import annotations

import sys

from qorch.devcluster import background

if __name__ == "__main__":
    if sys.argv[1:] != ["serve"]:
        sys.stderr.write("usage: python -m qorch.devcluster serve\n")
        sys.exit(2)
    sys.exit(background.serve())
