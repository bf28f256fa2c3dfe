"""Talking to the Kubernetes API: the small async client, applying rendered children idempotently
(spec hash plus subset check), Secrets created once with generated values, and informers (a kind's
objects in memory, kept by a list and then a watch). Imports ``model`` and
``render``.
"""
