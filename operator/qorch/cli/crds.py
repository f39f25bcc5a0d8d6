"""`qorch crds ...`: the CustomResourceDefinitions generated from qorch.api."""

from __future__ import annotations

import sys
from pathlib import Path

import typer

from qorch.api import crd

__all__ = ["app"]

app = typer.Typer(help="CustomResourceDefinitions.", no_args_is_help=True)


@app.command("generate")
def generate(
    output_dir: Path = typer.Option(Path("crds"), "--output-dir", "-d", help="Where to write the YAML files."),
    check: bool = typer.Option(False, "--check", help="Write nothing; exit 1 if the files are out of date."),
) -> None:
    """Write one YAML file per kind, generated from the pydantic models."""
    rendered = crd.render()
    stale = [name for name, text in rendered.items() if _read(output_dir / name) != text]
    if check:
        if stale:
            sys.stderr.write(f"out of date in {output_dir}: {', '.join(stale)}; run `qorch crds generate`\n")
            raise typer.Exit(1)
        typer.echo(f"{len(rendered)} CRDs up to date")
        return
    output_dir.mkdir(parents=True, exist_ok=True)
    for name in stale:
        (output_dir / name).write_text(rendered[name])
    typer.echo(f"wrote {len(stale)} of {len(rendered)} CRDs to {output_dir}")


@app.command("print")
def print_all() -> None:
    """Print every CRD as one multi-document YAML stream (for `| kubectl apply -f -`)."""
    typer.echo("---\n".join(crd.render().values()), nl=False)


def _read(path: Path) -> str | None:
    try:
        return path.read_text()
    except FileNotFoundError:
        return None
