"""unlearning-workbench: did an unlearning edit remove the knowledge, or only suppress it?"""

from workbench.errors import WorkbenchError

__version__ = "0.1.0"
__all__ = ["WorkbenchError", "__version__"]
