"""Talking to the Kubernetes API: the small async client, applying rendered children idempotently
(spec hash plus subset check) and Secrets created once with generated values. Imports ``model`` and
``render``.
"""
