"""labkit: learn how Linux containers work by building one.

The package is laid out bottom-up, in the order the lessons teach it: ``labkit.sys`` (the
syscalls), ``labkit.namespaces``, ``labkit.rootfs``, then the later layers. Import the module you
need; importing ``labkit`` itself stays cheap because the namespace helper child imports it.
"""

__version__ = "0.1.0"
