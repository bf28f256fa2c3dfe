"""Storage of the tracker: one interface, SQLite and PostgreSQL behind it, one schema for both.

Owns the schema and its migrations, the row types every other room reads and writes, and the batched
look-up of click targets. The lowest room of the tracker: it imports nothing from the others.
"""

from politetenant.tracker.storage.base import StorageUnavailable, Store, open_store
from politetenant.tracker.storage.rows import Event, EventKind

__all__ = ["Event", "EventKind", "StorageUnavailable", "Store", "open_store"]
