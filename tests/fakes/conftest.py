"""Fixtures of the pod runner's tests (``test_pod_runner*.py``): one emulator and one runner per module."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.fakes.kube_server import KubeApiHandle, running_kube_api
from tests.fakes.pod_runner import PodRunner
from tests.fakes.pod_testing import SCALE


@pytest.fixture(scope="module")
def kube() -> Iterator[KubeApiHandle]:
    """The Kubernetes API emulator, with CloudNativePG's ``Cluster`` CRD (modules may define their own)."""
    with running_kube_api(cnpg=True) as handle:
        yield handle


@pytest.fixture(scope="module")
def runner(kube: KubeApiHandle) -> Iterator[PodRunner]:
    """A pod runner on ``kube``; a pass of it that raised fails the module."""
    with PodRunner(kube, time_scale=SCALE) as started:
        yield started
        assert started.errors == []
