"""What every command shares: the two consoles, the one error handler, the common options.

Tables and results go to `out` (stdout, so `--json` output stays parseable); messages and errors
go to `err` (stderr). A command wrapped in `handles_errors` turns a `WorkbenchError` into one red
line and exit code 2, never a traceback.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from typing import Annotated, ParamSpec, TypeVar, overload

import typer
from rich.console import Console
from rich.markup import escape

from workbench.errors import WorkbenchError, one_line

out = Console()
err = Console(stderr=True)

P = ParamSpec("P")
R = TypeVar("R")

Model = Annotated[str, typer.Option(help="model spec")]
Facts = Annotated[str, typer.Option(help="fact file or built-in name")]
Device = Annotated[str | None, typer.Option(
    help="cpu, cuda, cuda:N, or auto (spread over every GPU) (default: the GPU if present)")]


def quiet_hf() -> None:
    """Silence transformers' warnings and progress bars (the CLI prints its own)."""
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()


@overload
def handles_errors(fn: Callable[P, R]) -> Callable[P, R]: ...
@overload
def handles_errors(*, quiet: bool = True) -> Callable[[Callable[P, R]], Callable[P, R]]: ...


def handles_errors(fn=None, *, quiet: bool = True):
    """Decorate a command: quiet HF logging (unless `quiet=False`: commands that load no model
    skip importing transformers) and print a `WorkbenchError` as `error: ...`, exit code 2."""

    def decorate(f: Callable[P, R]) -> Callable[P, R]:
        @functools.wraps(f)
        def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
            if quiet:
                quiet_hf()
            try:
                return f(*args, **kwargs)
            except WorkbenchError as e:
                # one line, never wrapped, brackets in the message shown as written
                err.print(f"[bold red]error:[/] {escape(one_line(e, limit=1000))}",
                          soft_wrap=True)
                raise typer.Exit(2) from None

        return wrapper

    return decorate(fn) if fn is not None else decorate
