"""The coordinator (ARCHITECTURE §2): holds no private data and sees only released values.

One round: region forward -> transaction steps on every agency -> aggregate model-1 updates
(+ optional coordinator noise, C6) -> pool the z gradients -> region backward. The backward
returns the ``z`` of the updated model 2 (the release the next forward would make), so after the
first round a round costs the region one call.
"""

from __future__ import annotations

import copy
import math
import os
import time
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import torch
from tqdm.auto import tqdm

from fedmugrep.compression import decompress, dense_nbytes
from fedmugrep.errors import DatasiteUnresponsiveError
from fedmugrep.federation.interfaces import RegionSite, TransactionSite
from fedmugrep.federation.parties import (
    EVAL_TERM_CLIP,
    PublicArtefacts,
)
from fedmugrep.federation.plan import FederationPlan
from fedmugrep.models.mugrep import EventModel, pooled_mean
from fedmugrep.privacy.gaussian import gaussian_release
from fedmugrep.privacy.laplace import snapped_noise_sd


@dataclass
class RoundRecord:
    round: int
    seconds: float
    bytes_up: dict[str, int]
    bytes_dense: int
    train_loss: float | None = None


@dataclass
class FederationResult:
    history: list[RoundRecord] = field(default_factory=list)
    metrics: dict = field(default_factory=dict)
    per_agency: dict = field(default_factory=dict)
    noise_multiplier: float = 0.0
    district_summary: dict = field(default_factory=dict)
    dropped: list[str] = field(default_factory=list)
    # the trained model as the data scientist holds it (all DP releases or public): model 1's
    # state (sigma calibration included), the released region representations z used for the
    # test evaluation, and the public artefacts (encoders, configs, split dates)
    model_state: dict[str, torch.Tensor] = field(default_factory=dict)
    z: torch.Tensor | None = None
    public: PublicArtefacts | None = None
    # exact test metrics pooled from the data owners' reports (filled by runtimes that hold
    # the datasites' homes, i.e. when one process plays every role on synthetic data)
    owner_metrics: dict = field(default_factory=dict)
    # who was charged, and each party's home (its ledger and the owner's reports)
    data_scientist: str = ""
    homes: dict[str, Path] = field(default_factory=dict)


#: Noise sd above which a released ratio says little about the model (MAPE and MAE of log are
#: compared between models a few hundredths apart; coverage80 must tell 0.8 from 0.7).
USEFUL_NOISE_SD = {"mape": 0.02, "mae_log": 0.02, "coverage80": 0.05}


def released_ranges(pooled: dict, plan: FederationPlan, parties: int) -> dict:
    """Post-process noised pooled metrics (free under DP): clamp each ratio to the range its
    clipped terms allow (MAPE and MAE of log in ``[0, 0.5]``, coverage in ``[0, 1]``) and add
    the standard deviation the noise gives each ratio (``<metric>_noise_sd``: that of
    ``parties`` summed snapped-Laplace releases over the noised count; the count's own noise
    ignored),
    so that a reader of a small test split knows how far to trust the figure.

    Where a ratio's noise sd exceeds :data:`USEFUL_NOISE_SD`, ``warnings`` says so and
    ``useful_evaluation_epsilon`` is the smallest per-evaluation ε (the plan's
    ``evaluation_epsilon``) that would bring every ratio within it at this test split's size."""
    rel, log, hit, _count = plan.evaluation_events()
    n = pooled["n"]
    out: dict = {"released": f"laplace (terms clipped at {EVAL_TERM_CLIP})"}
    events = {"mape": (rel, EVAL_TERM_CLIP), "mae_log": (log, EVAL_TERM_CLIP),
              "coverage80": (hit, 1.0)}  # fmt: skip
    for name, (event, top) in events.items():
        out[name] = min(max(pooled[name], 0.0), top)
        out[f"{name}_noise_sd"] = _ratio_sd(event.sensitivity, event.scale, parties, n)
    noisy = [k for k in events if out[f"{k}_noise_sd"] > USEFUL_NOISE_SD[k]]
    if noisy and plan.privacy is not None:
        eps = plan.privacy.evaluation_epsilon
        need = max(
            _epsilon_for_sd(events[k][0].sensitivity, events[k][0].scale * eps, parties, n,
                            USEFUL_NOISE_SD[k])
            for k in noisy
        )  # fmt: skip
        out["useful_evaluation_epsilon"] = need
        out["warnings"] = [
            f"{k} {out[k]:.3f} has noise sd {out[k + '_noise_sd']:.3f} on ~{n:,.0f} test sales "
            f"(useful below {USEFUL_NOISE_SD[k]}): too noisy to compare models"
            for k in noisy
        ] + [
            f"an evaluation_epsilon of {need:.3g} (now {eps:g}) would make the released test "
            f"metrics useful at this split's size; each evaluation is charged that much"
        ]
    return out


def _ratio_sd(sensitivity: float, scale: float, parties: int, n: float) -> float:
    """Noise sd of a ratio: ``parties`` summed snapped-Laplace releases over ``n``."""
    return parties**0.5 * snapped_noise_sd(sensitivity, scale) / max(n, 1.0)


def _epsilon_for_sd(
    sensitivity: float, scale_times_eps: float, parties: int, n: float, target: float
) -> float:
    """The smallest ε (2 significant digits, rounded up) whose scale ``scale_times_eps / ε``
    gives the ratio a noise sd of at most ``target`` (the sd falls as ε grows)."""
    lo, hi = 1e-6, 1.0
    while _ratio_sd(sensitivity, scale_times_eps / hi, parties, n) > target:
        lo, hi = hi, hi * 2.0
    for _ in range(60):
        mid = (lo + hi) / 2.0
        if _ratio_sd(sensitivity, scale_times_eps / mid, parties, n) > target:
            lo = mid
        else:
            hi = mid
    digits = 1 - int(math.floor(math.log10(hi)))
    return math.ceil(hi * 10**digits) / 10**digits


class Coordinator:
    """Runs federated rounds over transaction parties and a region party.

    ``parallel``: call the agencies of a round at the same time (one thread each); meant for
    datasites in other processes (HTTP), where a call mostly waits.
    """

    def __init__(
        self,
        plan: FederationPlan,
        public: PublicArtefacts,
        agencies: Mapping[str, TransactionSite],
        region: RegionSite,
        *,
        checkpoint: Path | None = None,
        parallel: bool = False,
    ) -> None:
        self.plan, self.public, self.region = plan, public, region
        self.agencies: dict[str, TransactionSite] = dict(agencies)
        self.parallel = parallel
        self.checkpoint = Path(checkpoint) if checkpoint else None
        self.dropped: list[str] = []
        torch.manual_seed(plan.seed)
        self.model = EventModel(public.model_config)
        if public.init_state is not None:  # public starting weights (e.g. mock pretraining)
            self.model.load_state_dict(public.init_state["event"])
        if plan.optimizer == "sgd":
            self.opt = torch.optim.SGD(self.model.parameters(), lr=plan.lr, momentum=0.9)
        else:
            self.opt = torch.optim.Adam(self.model.parameters(), lr=plan.lr)
        self.previous: dict[str, torch.Tensor] | None = None
        self.pooled_intra: torch.Tensor | None = None
        self.last_z: torch.Tensor | None = None
        self._z: torch.Tensor | None = None  # z of model 2's current state, when known
        self.n_total = 0.0
        self.layout = next(iter(agencies.values())).layout

    def theta(self) -> dict[str, torch.Tensor]:
        """Model-1 parameters and buffers (the sigma calibration) as broadcast to the parties."""
        return {n: v.detach().clone() for n, v in self.model.state_dict().items()}

    def _call(self, name: str, method: str, *args: object) -> object:
        """Call a party with retries and exponential backoff (safe: releases are idempotent).

        After ``plan.retries`` failed retries (at once for a hung datasite,
        :class:`~fedmugrep.errors.DatasiteUnresponsiveError`): ``on_unresponsive="drop"`` removes the datasite
        for the rest of the run and returns ``None``; ``"stop"`` re-raises. Budget errors are
        never retried.
        """
        delay = self.plan.retry_backoff
        for attempt in range(self.plan.retries + 1):
            try:
                return getattr(self.agencies[name], method)(*args)
            except (ConnectionError, TimeoutError, OSError) as exc:
                # a hung datasite (no answer within the call timeout) is not retried
                if attempt == self.plan.retries or isinstance(exc, DatasiteUnresponsiveError):
                    if self.plan.on_unresponsive == "drop" and len(self.agencies) > 1:
                        tqdm.write(
                            f"datasite {name} stopped answering ({exc}); continuing without it"
                        )
                        del self.agencies[name]
                        self.dropped.append(name)
                        return None
                    raise
                time.sleep(delay)
                delay *= 2
        return None  # pragma: no cover

    def _call_all(self, method: str, *args: object) -> dict[str, object]:
        """:meth:`_call` on every agency, in agency order; at the same time, one thread per
        agency, when :attr:`parallel` (remote datasites: the calls wait on other processes).
        Replies come back in agency order either way, so the aggregation is the same."""
        names = list(self.agencies)
        if not self.parallel or len(names) < 2:
            return {name: self._call(name, method, *args) for name in names}
        with ThreadPoolExecutor(max_workers=len(names), thread_name_prefix="fedmugrep") as pool:
            futures = {name: pool.submit(self._call, name, method, *args) for name in names}
            return {name: futures[name].result() for name in names}

    def _save(self, r: int, result: FederationResult, best: tuple) -> None:
        if self.checkpoint is None:
            return
        self.checkpoint.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.checkpoint.with_suffix(".tmp")
        torch.save(
            {
                "round": r,
                "model": self.model.state_dict(),
                "opt": self.opt.state_dict(),
                "previous": self.previous,
                "pooled_intra": self.pooled_intra,
                "n_total": self.n_total,
                "history": result.history,
                "best": best,
                "dropped": self.dropped,
            },
            tmp,
        )
        os.replace(tmp, self.checkpoint)

    def _resume(self, result: FederationResult) -> tuple[int, tuple]:
        ck = torch.load(self.checkpoint, weights_only=False)
        self.model.load_state_dict(ck["model"])
        self.opt.load_state_dict(ck["opt"])
        self.previous, self.pooled_intra, self.n_total = (
            ck["previous"],
            ck["pooled_intra"],
            ck["n_total"],
        )
        result.history = ck["history"]
        for name in ck["dropped"]:
            self.agencies.pop(name, None)
        self.dropped = list(ck["dropped"])
        self.region.restore(ck["round"])
        self._z = None
        return ck["round"] + 1, ck["best"]

    def setup(self, *, progress: bool = False) -> None:
        """Collect the one-off noisy intra-region sums/counts and noisy target counts
        (``progress``: a bar over the agencies)."""
        theta = self.theta()
        sums, counts, n = None, None, 0.0
        names = list(self.agencies)
        for name in tqdm(names, desc="set-up releases", unit="datasite", disable=not progress):
            got = self._call(name, "release_intra", theta)
            if got is None:
                continue
            s, c, k = got
            sums = s if sums is None else sums + s
            counts = c if counts is None else counts + c
            n += k
        # the true per-record vectors are tanh-bounded, so the mean lies in [-1, 1]; clamping
        # the noisy ratio there is post-processing and costs no privacy
        self.pooled_intra = pooled_mean(sums, counts).clamp(-1.0, 1.0)
        self.n_total = max(n, 1.0)

    def _region_z(self, r: int) -> torch.Tensor:
        """The released ``z`` of model 2's current state: the one its last update returned, or
        a forward call (first round, after a resume or a restore)."""
        if self._z is None:
            assert self.pooled_intra is not None
            self._z = self.region.forward(r, self.pooled_intra)
        return self._z

    def round(self, r: int) -> RoundRecord:
        t0 = time.perf_counter()
        assert self.pooled_intra is not None, "call setup() first"
        z = self._region_z(r)
        theta = self.theta()
        grad = {n: torch.zeros_like(v) for n, v in self.model.named_parameters()}
        z_grad = torch.zeros_like(z)
        bytes_up, loss = {}, 0.0
        for name, reply in self._call_all("step", r, theta, z, self.previous).items():
            if reply is None:
                continue
            for n, v in decompress(reply.theta, self.layout).items():
                grad[n] += v
            z_grad += reply.z_grad
            bytes_up[name] = reply.nbytes
            loss += reply.loss_sum
        grad = {n: v / self.n_total for n, v in grad.items()}
        p = self.plan.privacy
        if p is not None and p.coordinator_noise > 0:
            # extra noise on the public aggregate (C6): OpenDP's secure, float-safe sampler
            grad = {n: gaussian_release(v, std=p.coordinator_noise) for n, v in grad.items()}
        self.opt.zero_grad()
        for n, prm in self.model.named_parameters():
            prm.grad = grad[n].clone()
        self.opt.step()
        self.previous = grad  # public: already noised and aggregated
        # the region's update returns the z of its new state: the next round (or the evaluation)
        # needs no forward call
        self._z = self.region.backward(r, z_grad / self.n_total)
        return RoundRecord(
            r,
            time.perf_counter() - t0,
            bytes_up,
            dense_nbytes(self.layout) + z.numel() * 4,
            None if p is not None else loss / self.n_total,
        )

    def evaluate(self, split: str = "test") -> tuple[dict, dict]:
        """Owner-side evaluation on every agency; pooled over agencies."""
        assert self.pooled_intra is not None
        z = self._region_z(-1)
        self.last_z = z
        per = {name: a.evaluate(self.theta(), z, split) for name, a in self.agencies.items()}
        n = max(sum(m["n"] for m in per.values()), 1.0)
        pooled = {
            # euros are released only without privacy (owners see them in their reports)
            "mae": sum(m.get("abs_err_sum", float("nan")) for m in per.values()) / n,
            "mape": sum(m["rel_err_sum"] for m in per.values()) / n,
            "mae_log": sum(m["log_err_sum"] for m in per.values()) / n,
            "coverage80": sum(m["covered"] for m in per.values()) / n,
            "n": n,
        }
        if self.plan.privacy is not None:
            pooled.update(released_ranges(pooled, self.plan, len(per)))
        return pooled, per

    def calibrate(self) -> dict:
        """Combine the parties' per-district summaries d~ and rescale the predicted sigma.

        ``s^2 = sum z2 / sum count`` over all districts and parties (noisy sums and counts;
        never a raw count); the model's sigma offset becomes ``log s``. Returns the combined
        per-district summary (bias in log-price, sigma scale, noisy count).
        """
        assert self.pooled_intra is not None
        z = self._region_z(-1)
        with torch.no_grad():
            self.model.log_sigma_offset.zero_()
        theta = self.theta()
        z2 = e = c = None
        for name in list(self.agencies):
            got = self._call(name, "release_calibration", theta, z)
            if got is None:
                continue
            a, b, n = got
            z2, e, c = (a, b, n) if z2 is None else (z2 + a, e + b, c + n)
        cc = c.clamp(min=1.0)
        total = float(z2.clamp(min=0).sum()) / max(float(c.sum()), 1.0)
        scale = max(total, 1e-4) ** 0.5
        with torch.no_grad():
            self.model.log_sigma_offset.fill_(float(torch.log(torch.tensor(scale))))
        names = self.public.encoders.vocab.districts
        return {
            "sigma_scale": scale,
            "districts": {
                d: {
                    "bias_log": float(e[i] / cc[i]),
                    "sigma_scale": float((z2[i].clamp(min=0) / cc[i]) ** 0.5),
                    "count": float(c[i]),
                }
                for i, d in enumerate(names)
            },
        }

    def run(self, *, progress: bool = True) -> FederationResult:
        """Setup releases, rounds (checkpointed after each when a checkpoint path is set; a
        run finding a checkpoint resumes after its round), best-on-validation, calibration,
        test evaluation."""
        result = FederationResult(noise_multiplier=next(iter(self.agencies.values())).nm)
        best: tuple = (float("inf"), None)
        start = 0
        if self.checkpoint is not None and self.checkpoint.exists():
            start, best = self._resume(result)
        else:
            self.setup(progress=progress)
        bar = tqdm(
            range(start, self.plan.rounds),
            desc="federated rounds",
            disable=not progress,
            unit="round",
        )
        for r in bar:
            rec = self.round(r)
            result.history.append(rec)
            if r in self.plan.validation_rounds:
                val, _ = self.evaluate("val")
                bar.set_postfix(val_mae_log=f"{val['mae_log']:.4f}", refresh=False)
                if val["mae_log"] < best[0]:
                    best = (
                        val["mae_log"],
                        (
                            copy.deepcopy(self.model.state_dict()),
                            copy.deepcopy(self.region.model.state_dict()),
                        ),
                    )
            self._save(r, result, best)
        if best[1] is not None:
            self.model.load_state_dict(best[1][0])
            self.region.model.load_state_dict(best[1][1])
            self._z = None  # model 2 may have moved back
        result.district_summary = self.calibrate()
        result.metrics, result.per_agency = self.evaluate("test")
        result.dropped = list(self.dropped)
        result.model_state, result.z, result.public = self.theta(), self.last_z, self.public
        return result
