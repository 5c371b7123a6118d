"""What only the lessons need: plots, widgets, experiments and the exercise checks.

Nothing here is imported by the core modules; matplotlib and ipywidgets are imported only by the
modules in this package that draw or interact.
"""

# One module per lesson group, each importable on its own (plots needs matplotlib).
__all__ = ["cgroups", "checks", "escape", "layers", "network", "plots", "proctree", "userns"]
