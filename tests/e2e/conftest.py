"""Fixtures of the end-to-end tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.e2e.private_postgres import PrivatePostgres, started_private_postgres


@pytest.fixture
def private_pg() -> Iterator[PrivatePostgres]:
    """A PostgreSQL server of the test's own (initdb, own port), which it may stop and start."""
    with started_private_postgres() as server:
        yield server
