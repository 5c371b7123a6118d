"""What only the lessons need: plots, widgets, experiments and the exercise checks.

Nothing here is imported by the core modules; matplotlib and ipywidgets are imported only by the
modules in this package that draw or interact.
"""
