"""`python -m qorch.cli` runs the `qorch` command."""

from qorch.cli.main import run

run()
