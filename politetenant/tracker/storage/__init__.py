"""Storage of the tracker: one interface, SQLite and PostgreSQL behind it, one schema for both."""

from politetenant.tracker.storage.base import StorageUnavailable, Store, open_store
from politetenant.tracker.storage.rows import Event, EventKind

__all__ = ["Event", "EventKind", "StorageUnavailable", "Store", "open_store"]
