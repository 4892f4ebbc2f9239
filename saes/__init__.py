"""Sparse autoencoders for the workbench (SAELens underneath).

- `corpus`: the offline training corpus (standard-library docstring prose + the fact set).
- `activations` / `hooks`: capture activations at a TL-named hook; splice functions into HF trees.
- `train` / `metrics`: train with SAELens' `SAETrainer`; EV, L0, dead features, loss recovered.
- `load`: SAEs from disk or published SAELens releases (hub cache); fit checks.
- `features`: forget features (Farrell et al., 2024). `clamp`: the `sae_clamp` operator.
- `views`: feature dashboards (HTML / plotly). `cli`: `workbench sae train|features`.
"""
