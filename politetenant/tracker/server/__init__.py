"""The running tracker: assembling a worker (state, routes, middlewares), the lean path that answers
``/o/`` and ``/c/`` straight off the socket, health and readiness, and running N worker processes.

The composition root: it may import every room below it; only ``cli`` imports it.
"""
