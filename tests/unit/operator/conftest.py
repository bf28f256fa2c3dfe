"""The reconcile tests' fixtures: an in-memory Kubernetes API, a fake key lifecycle, a Runtime over both."""

from __future__ import annotations

import pytest

from politetenant.operator.runtime.reconcile import Runtime
from tests.unit.operator.test_reconcile import FakeKeys, FakeKube, make_runtime


@pytest.fixture
def kube() -> FakeKube:
    return FakeKube()


@pytest.fixture
def keys() -> FakeKeys:
    return FakeKeys()


@pytest.fixture
def rt(kube: FakeKube, keys: FakeKeys) -> Runtime:
    return make_runtime(kube, keys)
