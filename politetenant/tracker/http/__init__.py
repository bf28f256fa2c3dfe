"""What every HTTP route of the tracker builds on: errors as JSON (one type per failure), bearer
tokens and roles, the OpenAPI operation lists, and the worker's state that handlers read.

Routes themselves live in the rooms of their concern (``public``, ``messages``, ``privacy``,
``reports``), which import this room; it imports ``storage``, ``judging``, ``ingest`` and ``metrics``.
"""
