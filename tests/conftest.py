"""Shared fixtures. Eight fake CPU devices for sharding tests; data fixtures that skip (or fail on CI)."""

import os

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from pathlib import Path  # noqa: E402

import pytest  # noqa: E402

SHARED_DATA = Path(os.environ.get("CRESCEND_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))


def _data_dir(name: str) -> Path:
    path = SHARED_DATA / name
    if not path.is_dir():
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI=true but {path} is missing: CI must run with ../shared/data beside the checkout")
        pytest.skip(f"{path} not present")
    return path


@pytest.fixture(scope="session")
def percepiano_root() -> Path:
    """The shared PercePiano checkout (upstream layout)."""
    return _data_dir("percepiano")


@pytest.fixture(scope="session")
def asap_root() -> Path:
    """The shared ASAP dataset."""
    return _data_dir("asap")
