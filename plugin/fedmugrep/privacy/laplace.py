"""The Laplace mechanism of the source patent (C4), implemented safely (Mironov 2012).

**Definition (patent).** Scale ``b = Δf/ε``; noise ``= -b · sign(α) · ln(1 - 2|α|)`` with
``α ~ Uniform(-½, ½)``. Writing ``U* = 1 - 2|α|`` and ``S = sign(α)``, ``U*`` is uniform on
(0, 1) and independent of the fair sign ``S``, so the noise is ``-b · S · ln(U*)``.

**Why not the literal float version.** Computing that formula from a 53-bit float ``α``
(i) can hit ``ln 0`` at ``α = -½`` (infinite noise), (ii) truncates the tails (``1 - 2|α|``
is never below ``2**-52``, so ``|noise| <= 36.04 b``), and (iii) leaves gaps in the set of
reachable outputs that differ between neighbouring inputs — Mironov (2012) shows one output
then reveals the input most of the time. Here instead:

1. ``U*`` is drawn at full precision from a cryptographic source: a geometric exponent
   (fair bits until the first 1) and 52 uniform mantissa bits, so every double in (0, 1) is
   reachable with probability equal to its spacing; ``U*`` is never 0 or 1. ``S`` comes from a
   separate secure bit. (:func:`sample_u_star`)
2. The input is clamped to the declared bound ``[-B, B]``.
3. The noisy value is rounded ("snapped") to the grid of multiples of ``Λ``, the smallest
   power of two ``>= b/Δ`` in sensitivity units, then clamped again (the *snapping mechanism*,
   Mironov 2012 §5.2).
4. The release is charged ``snapping_epsilon(...)``, a hair more than ``Δ/b``
   (:func:`fedmugrep.privacy.events.snapping_epsilon`).

Assumes ``numpy.log`` is faithfully rounded (glibc's ``log`` is, within 1 ulp), as
Mironov's proof does. ``U* >= 2**-1022`` bounds the noise by ``708.4 · λ``: an output more
than that beyond the input is impossible, an event of probability below ``2**-1021`` that
pure-ε accounting ignores (strictly the guarantee is (ε', 2**-1021)-DP when ``B > 354 λ``).
Secure randomness is the default; :class:`SeededRandomSource` gives reproducible tests and
warns with :class:`InsecureRandomnessWarning`.
"""

from __future__ import annotations

import math
import os
import warnings
from typing import Any, Protocol, TypeVar, runtime_checkable

import numpy as np

from fedmugrep.errors import PrivacyParameterError
from fedmugrep.privacy.events import LaplaceEvent, _check_positive, snapping_epsilon

__all__ = [
    "InsecureRandomnessWarning",
    "LaplaceMechanism",
    "RandomSource",
    "SecureRandomSource",
    "SeededRandomSource",
    "laplace_noise",
    "sample_signs",
    "sample_u_star",
    "snap_grid",
    "snapped_noise_sd",
    "snapping_mechanism",
]

T = TypeVar("T")

_MAX_EXPONENT = 1022  # U* >= 2**-1022: the smallest normal double, so ln U* >= -708.4


class InsecureRandomnessWarning(UserWarning):
    """Noise is being drawn from a seeded, non-cryptographic generator."""


@runtime_checkable
class RandomSource(Protocol):
    """Where noise bits come from: ``words(n)`` gives ``n`` uniform 64-bit unsigned integers."""

    secure: bool

    def words(self, n: int) -> np.ndarray:
        """``n`` independent uniform ``uint64`` words. Shapes: ``(n,)``."""
        ...


class SecureRandomSource:
    """Cryptographically secure bits from the operating system (``os.urandom``). The default."""

    secure = True

    def words(self, n: int) -> np.ndarray:
        if n <= 0:
            return np.zeros(0, dtype=np.uint64)
        return np.frombuffer(os.urandom(8 * n), dtype="<u8").astype(np.uint64)

    def __repr__(self) -> str:
        return "SecureRandomSource()"


class SeededRandomSource:
    """Reproducible, **not secure** bits (NumPy PCG64) for tests; warns on construction.

    Args:
        seed: seed of the generator.
    """

    secure = False

    def __init__(self, seed: int) -> None:
        warnings.warn(
            f"SeededRandomSource(seed={seed}) is not cryptographically secure: use it for "
            "tests only, never for noise that protects real data",
            InsecureRandomnessWarning,
            stacklevel=2,
        )
        self.seed = seed
        self._bitgen = np.random.PCG64(seed)

    def words(self, n: int) -> np.ndarray:
        if n <= 0:
            return np.zeros(0, dtype=np.uint64)
        return np.asarray(self._bitgen.random_raw(n), dtype=np.uint64)

    def __repr__(self) -> str:
        return f"SeededRandomSource(seed={self.seed})"


def _trailing_zeros(w: np.ndarray) -> np.ndarray:
    """Number of trailing zero bits of non-zero uint64 words."""
    low = w & (~w + np.uint64(1))  # lowest set bit
    return np.log2(low.astype(np.float64)).astype(np.int64)


def sample_u_star(n: int, source: RandomSource) -> np.ndarray:
    """``n`` draws of ``U* = 1 - 2|α|`` uniform on (0, 1) at full double precision.

    ``U* = (1 + m·2**-52) · 2**-e`` with ``m`` 52 uniform bits and ``e >= 1`` geometric
    (``P(e = k) = 2**-k``, counted as fair bits until the first 1), capped at 1022. Every double
    ``u`` in ``[2**-1022, 1)`` is drawn with probability equal to its spacing (Mironov 2012's
    ``U*``); the result is never 0 (so ``ln`` is finite, ``>= -708.4``) and never 1.

    Shapes:
        output: ``(n,)``, float64.
    """
    mantissa = source.words(n) >> np.uint64(12)
    exponent = np.ones(n, dtype=np.int64)
    pending = np.arange(n)
    while pending.size:
        w = source.words(pending.size)
        nonzero = w != 0
        exponent[pending[nonzero]] += _trailing_zeros(w[nonzero])
        exponent[pending[~nonzero]] += 64
        pending = pending[~nonzero]
        pending = pending[exponent[pending] < _MAX_EXPONENT]
    exponent = np.minimum(exponent, _MAX_EXPONENT)
    frac = 1.0 + mantissa.astype(np.float64) * 2.0**-52  # exact: m < 2**52
    return np.ldexp(frac, -exponent)


def sample_signs(n: int, source: RandomSource) -> np.ndarray:
    """``n`` fair signs (±1.0) from their own secure bits. Shapes: output ``(n,)``."""
    bits = source.words(n) & np.uint64(1)
    return 1.0 - 2.0 * bits.astype(np.float64)


def laplace_noise(*, scale: float, size: int, source: RandomSource | None = None) -> np.ndarray:
    """``size`` draws of ``Laplace(0, scale)``: the patent formula ``-b·sign(α)·ln(1-2|α|)``.

    Drawn as ``-scale · S · ln(U*)`` with :func:`sample_u_star` and :func:`sample_signs`; no
    clamping or snapping, so this is the *distribution* only. Releasing data needs
    :class:`LaplaceMechanism`.

    Shapes:
        output: ``(size,)``, float64, always finite.
    """
    scale = _check_positive("scale", scale)
    source = source if source is not None else SecureRandomSource()
    u = sample_u_star(size, source)
    s = sample_signs(size, source)
    return -scale * s * np.log(u)


def snap_grid(lam: float) -> float:
    """Smallest power of two ``>= lam`` (the snapping grid ``Λ`` in sensitivity units)."""
    mant, exp = math.frexp(lam)  # lam = mant * 2**exp, mant in [0.5, 1)
    return lam if mant == 0.5 else math.ldexp(1.0, exp)


def snapped_noise_sd(sensitivity: float, scale: float) -> float:
    """Standard deviation of the snapping mechanism's noise away from the bound: Laplace
    ``2 b^2`` plus the round-off to the grid ``Λ Δ``, ``(Λ Δ)^2 / 12`` (~uniform: ``b >= Λ Δ /
    2``)."""
    grid = snap_grid(scale / sensitivity) * sensitivity
    return math.sqrt(2.0 * scale**2 + grid**2 / 12.0)


def snapping_mechanism(
    value: np.ndarray,
    *,
    u_star: np.ndarray,
    sign: np.ndarray,
    sensitivity: float,
    scale: float,
    bound: float,
) -> np.ndarray:
    """The deterministic core of the snapping mechanism, given its randomness.

    In sensitivity units ``x = value/Δ``, ``λ = b/Δ``, ``B' = B/Δ``::

        y = clamp_B'( Λ · rint( (clamp_B'(x) + (-λ · S · ln U*)) / Λ ) ),   output = Δ · y

    Exposed so that tests (and auditors) can evaluate the mechanism on chosen randomness.
    NaN inputs are treated as 0 (an error would itself reveal the value).

    Shapes:
        value, u_star, sign: broadcastable, e.g. ``(n,)``; output: their broadcast shape.
    """
    lam = scale / sensitivity
    b_norm = bound / sensitivity
    grid = snap_grid(lam)
    x = np.nan_to_num(np.asarray(value, dtype=np.float64) / sensitivity, nan=0.0)
    x = np.clip(x, -b_norm, b_norm)
    noise = -(lam * np.log(u_star)) * sign  # the patent formula, in sensitivity units
    y = np.rint((x + noise) / grid) * grid
    return np.clip(y, -b_norm, b_norm) * sensitivity


class LaplaceMechanism:
    """Snapped Laplace mechanism for floats, NumPy arrays and torch tensors.

    Sensitivity argument (states what the caller must guarantee): ``sensitivity`` is the
    L1 sensitivity of the statistic ``f`` released — ``||f(D) - f(D')||_1 <= sensitivity``
    for datasets differing in one transaction record. Clamping each coordinate to
    ``[-bound, bound]`` is 1-Lipschitz per coordinate, so it keeps that sensitivity; every
    coordinate gets independent noise of scale ``b = sensitivity/epsilon``; snapping and the
    final clamp are post-processing of the noised value (up to the floating-point term that
    :func:`~fedmugrep.privacy.events.snapping_epsilon` charges). One call is one release;
    charge ``mechanism.event(dimension=value.size)`` for it.

    Args:
        sensitivity: L1 sensitivity Δf of each release (> 0).
        bound: declared bound ``B`` on every coordinate's absolute value (> 0); inputs beyond
            it are clamped. Must be ``< 2**46 · scale``.
        epsilon: target ε of the ideal mechanism; the scale is ``sensitivity/epsilon``.
        scale: the Laplace scale ``b`` directly (give exactly one of ``epsilon``/``scale``).
        source: random bits; :class:`SecureRandomSource` by default.

    Example:
        >>> mech = LaplaceMechanism(sensitivity=1.0, bound=1e4, epsilon=0.5)
        >>> noisy_count = mech.release(1234.0)
        >>> event = mech.event()            # charge this to the ledger
    """

    def __init__(
        self,
        *,
        sensitivity: float,
        bound: float,
        epsilon: float | None = None,
        scale: float | None = None,
        source: RandomSource | None = None,
    ) -> None:
        self.sensitivity = _check_positive("sensitivity", sensitivity)
        self.bound = _check_positive("bound", bound)
        if (epsilon is None) == (scale is None):
            raise PrivacyParameterError(
                "give exactly one of epsilon or scale (got "
                f"epsilon={epsilon}, scale={scale}); e.g. epsilon=1.0"
            )
        if epsilon is not None:
            self.scale = self.sensitivity / _check_positive("epsilon", epsilon)
        else:
            self.scale = _check_positive("scale", scale)  # type: ignore[arg-type]
        # validates bound < 2**46 * scale
        snapping_epsilon(sensitivity=self.sensitivity, scale=self.scale, bound=self.bound)
        if source is not None and not isinstance(source, RandomSource):
            raise PrivacyParameterError(
                f"source must provide words(n) and secure (got {type(source).__name__}); "
                "use SecureRandomSource()"
            )
        self.source: RandomSource = source if source is not None else SecureRandomSource()

    @classmethod
    def from_event(
        cls, event: LaplaceEvent, *, source: RandomSource | None = None
    ) -> LaplaceMechanism:
        """The mechanism an event describes (its sensitivity, scale and bound): releasing with
        it and charging ``mechanism.event(dimension=...)`` charges what the event states."""
        return cls(
            sensitivity=event.sensitivity, bound=event.bound, scale=event.scale, source=source
        )

    @classmethod
    def for_budget(
        cls,
        *,
        epsilon: float,
        sensitivity: float,
        bound: float,
        dimension: int = 1,
        source: RandomSource | None = None,
    ) -> LaplaceMechanism:
        """The mechanism whose *charged* ε for one release of ``dimension`` coordinates is at
        most ``epsilon`` (the plain constructor's ``epsilon`` is the ideal one, and the
        snapping excess then makes the charge a hair larger — enough to miss a cap set to
        exactly ``k · epsilon``)."""
        epsilon = _check_positive("epsilon", epsilon)
        sensitivity = _check_positive("sensitivity", sensitivity)
        bound = _check_positive("bound", bound)
        extra = dimension * 2.0**-48
        if extra >= epsilon:
            raise PrivacyParameterError(
                f"epsilon must exceed the snapping excess {extra:g} (got {epsilon}); "
                "release fewer coordinates at once"
            )
        scale = max((sensitivity + extra * bound) / epsilon, sensitivity / (epsilon - extra))
        while (
            snapping_epsilon(sensitivity=sensitivity, scale=scale, bound=bound, dimension=dimension)
            > epsilon
        ):
            scale = math.nextafter(scale, math.inf)
        return cls(sensitivity=sensitivity, bound=bound, scale=scale, source=source)

    def __repr__(self) -> str:
        return (
            f"LaplaceMechanism(sensitivity={self.sensitivity:g}, scale={self.scale:g}, "
            f"bound={self.bound:g}, grid={self.grid:g}, source={self.source!r})"
        )

    @property
    def epsilon(self) -> float:
        """ε of the ideal mechanism, ``sensitivity/scale``."""
        return self.sensitivity / self.scale

    def charged_epsilon(self, dimension: int = 1) -> float:
        """Pure ε charged for one release of ``dimension`` coordinates (snapping-adjusted)."""
        return snapping_epsilon(
            sensitivity=self.sensitivity, scale=self.scale, bound=self.bound, dimension=dimension
        )

    @property
    def grid(self) -> float:
        """Spacing of released values: ``Λ · sensitivity`` (``Λ`` a power of two >= b/Δ)."""
        return snap_grid(self.scale / self.sensitivity) * self.sensitivity

    def event(self, *, dimension: int = 1, count: int = 1) -> LaplaceEvent:
        """The event to charge for ``count`` releases of ``dimension`` coordinates each."""
        return LaplaceEvent(self.sensitivity, self.scale, count, self.bound, dimension)

    def _noise_core(self, flat: np.ndarray) -> np.ndarray:
        n = flat.size
        return snapping_mechanism(
            flat,
            u_star=sample_u_star(n, self.source),
            sign=sample_signs(n, self.source),
            sensitivity=self.sensitivity,
            scale=self.scale,
            bound=self.bound,
        )

    def release(self, value: T) -> T:
        """Noised, snapped copy of ``value`` (same type; same shape, dtype and device).

        Sensitivity argument: the caller guarantees ``||f(D) - f(D')||_1 <= sensitivity`` for
        the statistic ``value = f(D)`` and neighbouring ``D, D'`` (one record added/removed);
        then this call is ``charged_epsilon(value.size)``-DP (see the class docstring).

        Accepts a Python number (returns ``float``), a NumPy array or array-like (returns a
        float array), or a torch tensor (returns a tensor without autograd history). Arithmetic
        is in float64; casting to a narrower dtype afterwards is post-processing.

        Shapes:
            value: any shape ``(*)``; output: ``(*)``.
        """
        module = type(value).__module__.split(".")[0]
        if module == "torch":
            import torch  # deferred: loads torch

            tensor: Any = value
            arr = tensor.detach().to("cpu", torch.float64).numpy().reshape(-1)
            out = self._noise_core(arr).reshape(tuple(tensor.shape))
            dtype = tensor.dtype if tensor.is_floating_point() else torch.float64
            return torch.from_numpy(out).to(device=tensor.device, dtype=dtype)  # type: ignore[return-value]
        if isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool):
            return float(self._noise_core(np.array([float(value)]))[0])  # type: ignore[return-value]
        arr = np.asarray(value)
        if arr.dtype.kind not in "fiu":
            raise PrivacyParameterError(
                f"value must be numeric (got dtype {arr.dtype}); pass floats, an array or a tensor"
            )
        out = self._noise_core(arr.astype(np.float64).reshape(-1)).reshape(arr.shape)
        if arr.dtype.kind == "f":
            out = out.astype(arr.dtype)
        return out  # type: ignore[return-value]

    __call__ = release
