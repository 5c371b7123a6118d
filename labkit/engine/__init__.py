"""The engine: the Docker Engine API on a unix socket, over labkit's runtime and image store.

The top of the stack the course builds: the docker CLI (unchanged) talks HTTP to this engine,
which drives ``labkit.container.manager`` and ``labkit.images``; they drive the kernel.

- ``server``: the unix socket, threads, version prefixes, the request log (``labkit engine``).
- ``api``: the route table and what an endpoint sees of a request; chunked answers, the hijack.
- ``streams``: stdout and stderr multiplexed into frames, stdin from a hijacked connection.
- ``errors``: Docker's error JSON and the HTTP status of each kind of error.
- ``system``, ``images``, ``containers``, ``execs``: the endpoints, one module per object kind.
- ``process``: a ``labkit engine`` process started and stopped from Python (lesson 50, tests).
"""
