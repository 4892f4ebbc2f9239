"""Unlearning operators: one module per family; importing this package fills the registry."""

from workbench.operators.base import (
    OPERATORS,
    Operator,
    OperatorConfig,
    config_fields,
    get_operator,
    make_config,
    register_operator,
)

__all__ = ["OPERATORS", "Operator", "OperatorConfig", "config_fields", "get_operator",
           "make_config", "register_operator"]

# Operator modules register themselves on import. Each helper adds its module to this list;
# a module that does not exist (yet) is skipped, but an import error inside one is raised.
_MODULES = (
    "workbench.operators.gradient",
    "workbench.operators.task_vector",
    "workbench.operators.rmu",
    "workbench.operators.prune",
    "workbench.operators.steer",
    "workbench.operators.prompt",
    "saes.clamp",
)


def _import_operator_modules() -> None:
    import importlib

    for mod in _MODULES:
        try:
            importlib.import_module(mod)
        except ModuleNotFoundError as e:
            if e.name is None or not mod.startswith(e.name):
                raise


_import_operator_modules()
