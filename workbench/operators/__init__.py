"""Unlearning operators: one module per family; importing this package fills the registry.

The core operator modules below register themselves on import; plug-ins (saes' `sae_clamp`)
come through the `workbench.operators` entry-point group (see `OPERATORS`)."""

from workbench.operators import gradient, prompt, prune, rmu, steer, task_vector  # noqa: F401
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
