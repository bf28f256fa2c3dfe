"""Ingest: events accepted by the public routes go to an in-memory buffer, flushed to the database in
batches; while the database is down they spill to append-only spool files and are replayed later,
and while it lags, events that waited are written ahead to a journal on the spool (a crash's loss
stays bounded by time) but still stored from memory.

Why a room of its own: a request handler never waits on the database, and nothing answered with a
2xx is lost. Imports ``storage`` and ``metrics`` only.
"""
