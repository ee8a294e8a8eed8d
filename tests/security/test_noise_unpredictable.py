"""DP-SGD noise cannot be recomputed by an attacker (regression for the 32-bit seed attack).

The attack: the transaction party drew its Gaussian noise as ``torch.randn(shape,
generator=torch.Generator().manual_seed(secrets.randbits(63)))``. torch's CPU generator
(MT19937) keeps only the low 32 bits of the seed, so there are only ``2**32`` possible noise
vectors: an attacker holding one noised gradient sum tries every 32-bit seed, finds the one
whose noise makes the residual look like a clipped gradient sum, and subtracts the noise —
recovering the exact sum that differential privacy was meant to hide. The fix draws the noise
from OpenDP (:mod:`fedmugrep.privacy.gaussian`), which takes its bits from OpenSSL's
cryptographic generator: there is no seed to search.
"""

from __future__ import annotations

import ast
import importlib.util
import random
import secrets
from pathlib import Path

import numpy as np
import pytest
import torch

import fedmugrep.privacy.gaussian as gaussian_module
from fedmugrep.privacy.gaussian import GaussianMechanism


@pytest.fixture
def mech() -> GaussianMechanism:
    return GaussianMechanism(sensitivity=1.0, noise_multiplier=1.0)


# -- (a) the premise: a torch generator has only 2**32 distinct streams -----------------------


@pytest.mark.parametrize("seed", [0, 123_456_789, None], ids=["0", "123456789", "random"])
def test_torch_generator_seed_keeps_only_32_bits(seed: int | None) -> None:
    """Why a torch generator must never produce DP noise: seeds that differ above bit 31 give
    identical noise, even though ``initial_seed()`` reports the full (different) seeds."""
    seed = secrets.randbits(32) if seed is None else seed
    shifted = seed + (1 + secrets.randbits(30)) * 2**32  # as secrets.randbits(63) could give
    gen_a = torch.Generator().manual_seed(seed)
    gen_b = torch.Generator().manual_seed(shifted)
    assert gen_a.initial_seed() != gen_b.initial_seed()
    a = torch.randn(1000, generator=gen_a, dtype=torch.float64)
    b = torch.randn(1000, generator=gen_b, dtype=torch.float64)
    assert torch.equal(a, b)


# -- (b) the release does not depend on any global seed -----------------------------------


def test_release_is_not_reproducible_from_global_seeds(mech: GaussianMechanism) -> None:
    outputs = []
    for _ in range(2):
        torch.manual_seed(0)
        np.random.seed(0)
        random.seed(0)
        outputs.append(mech.release(torch.zeros(1000)))
    assert not torch.equal(outputs[0], outputs[1])
    # nor is it torch's or numpy's standard normal stream under that seed
    torch.manual_seed(0)
    assert not torch.allclose(outputs[0], torch.randn(1000), atol=1e-3)
    np.random.seed(0)
    assert not np.allclose(outputs[0].numpy(), np.random.standard_normal(1000), atol=1e-3)


def test_gaussian_module_uses_no_seeded_generator() -> None:
    """The module's code (docstrings aside: they describe the attack) never touches a seedable
    generator: no ``torch.Generator``/``manual_seed``/``torch.randn``, no NumPy or stdlib
    ``random``."""
    tree = ast.parse(Path(gaussian_module.__file__).read_text(encoding="utf-8"))
    used = {ast.unparse(n) for n in ast.walk(tree) if isinstance(n, ast.Attribute)}
    used |= {n.id for n in ast.walk(tree) if isinstance(n, ast.Name)}
    used |= {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    banned = {"torch.Generator", "torch.randn", "torch.normal", "np.random", "numpy.random"}
    banned |= {"random", "secrets", "manual_seed", "default_rng"}
    assert not {u for u in used if u in banned or u.rsplit(".", 1)[-1] in banned}


# -- (c) the noise is not a function of a small state -------------------------------------


@pytest.mark.statistical
def test_two_releases_are_uncorrelated_and_share_no_subsequence(mech: GaussianMechanism) -> None:
    """Two releases of 1,000 zeros. A generator with a 32-bit state replays streams (the same
    seed twice, or overlapping streams); here the releases must look independent:
    ``|r| < 0.2`` (null s.d. of r is 1/sqrt(1000) ≈ 0.032, so a false alarm is a 6σ event,
    ~2e-10), and no run of 4 consecutive values of one appears anywhere in the other (values
    live on a 2**-30 grid with std 1: a chance match of 4 values has probability ~1e-30)."""
    a = mech.release(np.zeros(1000))
    b = mech.release(np.zeros(1000))
    assert abs(np.corrcoef(a, b)[0, 1]) < 0.2
    for lag in range(1, 10):  # nor is one a shifted copy of the other
        assert abs(np.corrcoef(a[lag:], b[:-lag])[0, 1]) < 0.2
        assert abs(np.corrcoef(b[lag:], a[:-lag])[0, 1]) < 0.2
    windows_a = {tuple(a[i : i + 4]) for i in range(a.size - 3)}
    assert not any(tuple(b[i : i + 4]) in windows_a for i in range(b.size - 3))


# -- (d) the transaction party no longer uses a torch generator for its noise ---------------


def test_transaction_party_noise_does_not_use_a_torch_generator() -> None:
    """EXPECTED TO FAIL until ``fedmugrep.federation.parties`` draws its Gaussian noise through
    :mod:`fedmugrep.privacy.gaussian` (its ``_gaussian`` helper still seeds a
    ``torch.Generator``). The source is read from the module's file — the same text
    ``inspect.getsource(fedmugrep.federation.parties)`` returns — without importing it."""
    spec = importlib.util.find_spec("fedmugrep.federation.parties")
    assert spec is not None and spec.origin is not None
    source = Path(spec.origin).read_text(encoding="utf-8")
    assert "torch.Generator" not in source
