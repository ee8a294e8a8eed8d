"""Shared fixtures for the privacy tests."""

from __future__ import annotations

import warnings
from collections.abc import Callable

import pytest

from fedmugrep.privacy.laplace import InsecureRandomnessWarning, SeededRandomSource


@pytest.fixture
def seeded() -> Callable[[int], SeededRandomSource]:
    """Factory of seeded (insecure) random sources, with the expected warning silenced."""

    def make(seed: int) -> SeededRandomSource:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", InsecureRandomnessWarning)
            return SeededRandomSource(seed)

    return make
