"""The container runtime: what runc is, built from labkit's kernel features.

- ``spec``: OCI's config.json as dataclasses, loaded and checked (``load(bundle)``).
- ``steps``: the set-up in runc's order, one named function per step (``steps.describe()``).
- ``init``: the child that runs the steps and execs the container's process.
- ``lifecycle``: create, start, state, kill, delete, and the state directory.
- ``cli``: ``labkit-runtime``, runc's command line over the life cycle.

    from labkit.container import lifecycle
    c = lifecycle.create("demo", "/path/to/bundle")   # set up, waiting to start
    lifecycle.start("demo"); print(c.state()); lifecycle.delete("demo", force=True)
"""

from .spec import Spec, SpecError, load

__all__ = ["Spec", "SpecError", "load"]
