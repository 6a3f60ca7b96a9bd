"""Shared fixtures; GPU tests skip cleanly where no CUDA device is present."""

from __future__ import annotations

import os

import pytest
import torch
from hypothesis import HealthCheck, settings

# Hypothesis profiles: "dev" (the default for local runs) keeps property tests quick;
# "ci" (chosen where CI=true, or with HYPOTHESIS_PROFILE=ci) runs more examples for the
# tests that do not pin their own count. Tests that set max_examples keep it: those
# counts were sized for the 2-core CI machine.
settings.register_profile("dev", max_examples=25, deadline=None)
settings.register_profile(
    "ci", max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
settings.load_profile(
    os.environ.get("HYPOTHESIS_PROFILE", "ci" if os.environ.get("CI") == "true" else "dev")
)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(params=["cpu", pytest.param("cuda", marks=pytest.mark.gpu)])
def device(request: pytest.FixtureRequest) -> torch.device:
    """Run a test on CPU, and on CUDA where one is present."""
    return torch.device(request.param)


# Never let a stray background call start a fresh Ray (it hangs on a dead cluster's
# address); the tests start and stop their clusters themselves. Read by ray on import.
os.environ.setdefault("RAY_ENABLE_AUTO_CONNECT", "0")
