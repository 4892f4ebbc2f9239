"""The `workbench` command line: a composition root over the library (see `apps.cli.main`)."""

from apps.cli.main import app, main

__all__ = ["app", "main"]
