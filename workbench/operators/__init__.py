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

# Operator modules register themselves on import. Each helper adds its module to this list.
for _mod in ():
    __import__(_mod)
