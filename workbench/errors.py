"""Errors the workbench raises on bad input; the CLI prints them without a traceback."""


class WorkbenchError(Exception):
    """Base class: a clear message about bad input or an impossible request."""


class ModelLoadError(WorkbenchError):
    """A model spec could not be resolved or loaded."""


class IncompatibleSubjectsError(WorkbenchError):
    """Two subjects that must be compared differ in architecture or tokenizer."""


class FactFileError(WorkbenchError):
    """A fact file or fact set is malformed; the message names the file, line and field."""


class LayerError(WorkbenchError):
    """A layer index or hook point does not exist in the subject."""


def one_line(e: BaseException, limit: int = 300) -> str:
    """`e`'s message on one line (library errors often span several), cut to `limit` characters."""
    text = " ".join(str(e).split()) or type(e).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."
