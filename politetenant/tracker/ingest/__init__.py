"""Ingest: events accepted by the public routes go to an in-memory buffer, flushed to the database in
batches; while the database is down they spill to an append-only spool file and are replayed later.

Why a room of its own: a request handler never waits on the database, and nothing answered with a
2xx is lost. Imports ``storage`` and ``metrics`` only.
"""
