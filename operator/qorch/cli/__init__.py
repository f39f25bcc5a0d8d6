"""The `qorch` command line: thin translation of user input to library calls."""

__all__: list[str] = []
