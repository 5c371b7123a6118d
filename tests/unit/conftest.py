"""The pure tests: parsers and tables checked on given text, runnable by an ordinary user.

Nothing here needs root or touches the kernel's state (tests/conftest.py skips its root check
and its leftover check for this directory), so a contributor runs them in a second:

    .venv/bin/python -m pytest -p no:cacheprovider tests/unit

What these parsers meet on a real host is tested as root in the other files of tests/.
"""
