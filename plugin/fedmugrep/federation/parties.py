"""What runs on each datasite: the transaction party (model 1) and the region party (model 2).

These classes are the bodies of the remote functions. The local runtime calls them
in-process; the PySyft runtime calls the same methods inside approved code on a datasite.
Every value a method returns to the coordinator is either noised and charged to the
datasite's ledger first (never the other way round), or public.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import json
import logging
import os
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from fedmugrep.compression import (
    PublicAggregatePolicy,
    SparseUpdate,
    channel_layout,
    compress,
)
from fedmugrep.errors import ConfigError
from fedmugrep.federation.admission import check_artefacts
from fedmugrep.federation.plan import FederationPlan, PublicArtefacts
from fedmugrep.federation.valuation import APPRAISAL_MECHANISM, PrivateAppraisal
from fedmugrep.models.mugrep import (
    CommunityGraph,
    EventModel,
    ModelConfig,
    RegionModel,
    TransactionGraph,
)
from fedmugrep.privacy.events import LaplaceEvent
from fedmugrep.privacy.gaussian import GaussianMechanism
from fedmugrep.privacy.laplace import LaplaceMechanism
from fedmugrep.privacy.ledger import Ledger, payload_digest
from fedmugrep.privacy.witness import check_witness, record_release
from fedmugrep.training.metrics import Z80, bounded_exp, distribution_metrics
from fedmugrep.training.per_target import clipped_gradient_sums, sum_sensitivity
from fedmugrep.training.prepare import transaction_graph

#: Per-row error terms of a private evaluation are clipped here (relative and log errors).
EVAL_TERM_CLIP = 0.5

_LOG = logging.getLogger("fedmugrep.datasite")
_THREAD_LOCKS: dict[str, threading.RLock] = {}
_THREAD_LOCKS_GUARD = threading.Lock()
_HELD = threading.local()


def _private_file(path: Path) -> None:
    """Owner-only permissions (0600) on a file this party wrote."""
    with contextlib.suppress(OSError):
        os.chmod(path, 0o600)


def exclusive(method: Callable) -> Callable:
    """Run a releasing method with the party's lock held (threads *and* processes).

    One release key then gives one reply, charged once, however many identical calls arrive
    at the same time: the first computes, charges and finalises; the others find its final
    file and replay it. Region updates are serialised the same way.
    """

    @functools.wraps(method)
    def wrapper(self: _ReleasingParty, *args: Any, **kwargs: Any) -> Any:
        with self._exclusive():
            return method(self, *args, **kwargs)

    return wrapper


@dataclass
class StepReply:
    """What a transaction datasite releases each round (all noised when privacy is on)."""

    theta: SparseUpdate
    z_grad: torch.Tensor
    loss_sum: float
    nbytes: int


class _ReleasingParty:
    """Idempotent, charged releases of one party (per run and release key).

    Subclasses set ``name`` (the dataset charged and the files' prefix), ``home``, ``ledger``,
    ``plan``, ``data_scientist`` and ``request_id``.
    """

    name: str
    home: Path
    ledger: Ledger
    plan: FederationPlan
    data_scientist: str
    request_id: str

    @contextlib.contextmanager
    def _exclusive(self) -> Iterator[None]:
        folder = self.home / "releases"
        folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        lock_path = folder / f".{self.name}.lock"
        with _THREAD_LOCKS_GUARD:
            tlock = _THREAD_LOCKS.setdefault(str(lock_path.resolve()), threading.RLock())
        with tlock:
            depth = getattr(_HELD, "depth", {})
            _HELD.depth = depth
            key = str(lock_path)
            if depth.get(key):  # re-entered (backward -> forward): the file lock is ours
                depth[key] += 1
                try:
                    yield
                finally:
                    depth[key] -= 1
                return
            fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
                depth[key] = 1
                yield
            finally:
                depth[key] = 0
                fcntl.flock(fd, fcntl.LOCK_UN)
                os.close(fd)

    def _check_ledger_intact(self) -> None:
        """Refuse to serve when the release index records charges the ledger lacks
        (:func:`~fedmugrep.privacy.witness.check_witness`): a deleted or truncated ledger
        would otherwise forget what was spent."""
        check_witness(self.ledger)

    @staticmethod
    def _laplace(event: LaplaceEvent, value: Any) -> tuple[Any, LaplaceEvent]:
        """``value`` released by the Laplace mechanism of ``event`` (its sensitivity, scale and
        bound), and the event to charge for it (one release of ``value``'s coordinates)."""
        mech = LaplaceMechanism.from_event(event)
        size = value.numel() if torch.is_tensor(value) else int(np.size(value))
        return mech.release(value), mech.event(dimension=int(size))

    def _release_files(self, key: str) -> tuple[Path, Path]:
        """(final, pending) files of the release ``key`` of this run."""
        base = self._release_path(key)
        return base.with_suffix(".pt"), base.with_suffix(".pending")

    def _request_folder(self) -> str:
        """This run's request id as a safe folder name."""
        return "".join(c if c.isalnum() or c in "-_." else "_" for c in self.request_id)

    def _release_path(self, key: str) -> Path:
        folder = self.home / "releases" / self._request_folder()
        folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        return folder / f"{self.name}-{key}"

    def _charged(self, digest: str) -> bool:
        return any(
            e.status == "charged" and e.payload_sha256 == digest and e.request_id == self.request_id
            for e in self.ledger.entries()
        )

    def _replay(self, key: str) -> Any:
        """The value already released under ``key`` in this run, or ``None``.

        Releases are idempotent per (run, key): a retried call (lost reply, coordinator
        restart) gets the same noised value back and is never charged twice. A value whose
        charge was interrupted is finalised only if the ledger holds its charge; otherwise it
        was never released and is recomputed with fresh noise.
        """
        final, pending = self._release_files(key)
        if final.exists():
            return torch.load(final, weights_only=False)["value"]
        if pending.exists():
            rec = torch.load(pending, weights_only=False)
            if rec["digest"] is None or self._charged(rec["digest"]):
                os.replace(pending, final)
                return rec["value"]
        return None

    def _charge(
        self, mechanism: str, events: list, payload: object, *, key: str, value: Any
    ) -> None:
        """Record ``value`` as pending, charge it, then finalise.

        No ledger lookup is needed here: a value reaching this point was just computed with
        fresh noise (:meth:`_replay` found nothing to return), so it cannot have been charged.
        """
        final, pending = self._release_files(key)
        charge = self.plan.privacy is not None and bool(events)
        digest = payload_digest(payload) if charge else None
        torch.save({"value": value, "digest": digest}, pending)
        _private_file(pending)
        if charge:
            self.ledger.charge(
                data_scientist=self.data_scientist,
                request_id=self.request_id,
                dataset=self.name,
                mechanism=mechanism,
                events=events,
                payload=payload,
            )
            record_release(
                self.home / "releases",
                run=self._request_folder(),
                release=f"{self.name}-{key}",
                digest=digest,
            )
        os.replace(pending, final)


class TransactionParty(_ReleasingParty):
    """A transaction datasite's side of training (runs where the transactions are)."""

    def __init__(
        self,
        name: str,
        frame: pd.DataFrame,
        home: Path,
        public: PublicArtefacts,
        plan: FederationPlan,
        *,
        data_scientist: str = "data-scientist",
        request_id: str = "local",
    ) -> None:
        self.name, self.public, self.plan = name, public, plan
        self.home = Path(home)
        self.home.mkdir(parents=True, exist_ok=True)
        self.ledger = Ledger(self.home)
        self.data_scientist, self.request_id = data_scientist, request_id
        check_artefacts(public.encoders, public.model_config, public.graph_config, plan)
        self._check_ledger_intact()
        self._mechanisms: tuple[GaussianMechanism, GaussianMechanism | None] | None = None
        df = frame.sort_values("date", kind="stable").reset_index(drop=True)
        # Sales outside the public vocabulary cannot be encoded. They are left out (the owner's
        # log says how many) rather than refused: a refusal would tell the data scientist,
        # uncharged, whether this datasite holds a sale in a community the vocabulary lacks.
        vocab = public.encoders.vocab
        known = (vocab.community_codes(df["community"]) >= 0) & (
            vocab.district_codes(df["district"]) >= 0
        )
        self.excluded_rows = int((~known).sum())
        if self.excluded_rows:
            _LOG.warning(
                "%s: %d of %d sales are outside the request's vocabulary and are left out",
                name,
                self.excluded_rows,
                len(df),
            )
            df = df.loc[known].reset_index(drop=True)
        self.frame = df
        d = df["date"].to_numpy()
        self.test = d >= public.test_start.to_datetime64()
        self.val = (d >= public.val_start.to_datetime64()) & ~self.test
        self.train = ~(self.test | self.val)
        self.graph: TransactionGraph = transaction_graph(
            df,
            public.encoders,
            public.graph_config,
            known=np.ones(len(df), bool),
            intra_mask=self.train,
        )
        self.targets = torch.nonzero(torch.as_tensor(self.train)).squeeze(1)
        self.model = EventModel(public.model_config)
        self.layout = channel_layout({n: p.shape for n, p in self.model.named_parameters()})
        p = plan.privacy
        self.update_event: LaplaceEvent | None = None
        if p is not None and p.update_mechanism == "laplace":
            n_coords = sum(v.numel() for v in self.model.parameters())
            self.update_event = plan.laplace_update_event(n_coords + public.model_config.z_dim)
            self.nm = 0.0
        else:
            self.nm = plan.noise_multiplier()

    # -- helpers ---------------------------------------------------------------------------
    def _round_mechanisms(self) -> tuple[GaussianMechanism, GaussianMechanism | None]:
        """The Gaussian mechanisms of a round's release: one for the joint ``(theta, z)``
        vector (second item ``None``), or one for ``theta`` and one for ``z`` when they are
        clipped apart. Sensitivity ``(1 + 2K) clip`` with the ``K`` of the graph this party
        built (:func:`~fedmugrep.federation.admission.check_artefacts`), noise multiplier
        :attr:`nm`."""
        if self._mechanisms is None:  # built once: each calibrates (and caches) per size
            p = self.plan.privacy
            assert p is not None and self.nm > 0
            k = self.public.graph_config.k
            theta = GaussianMechanism(
                sensitivity=sum_sensitivity(p.clip, k), noise_multiplier=self.nm
            )
            z = None
            if not p.joint_clip:
                z = GaussianMechanism(
                    sensitivity=sum_sensitivity(p.z_clip, k), noise_multiplier=self.nm
                )
            self._mechanisms = (theta, z)
        return self._mechanisms

    def _load(self, theta: dict[str, torch.Tensor]) -> None:
        self.model.load_state_dict(theta, strict=False)

    # -- releases --------------------------------------------------------------------------
    @exclusive
    def release_intra(
        self, theta: dict[str, torch.Tensor]
    ) -> tuple[torch.Tensor, torch.Tensor, float]:
        """Once per run: noisy intra-region sums and counts per community, and the noisy
        number of training targets (used by the coordinator to average, never a raw count).

        Sensitivity: see :class:`~fedmugrep.models.intra_region.IntraRegionEncoder` (sums,
        L1 ``2 m (1 + D)``) and 1 for each count.
        """
        cached = self._replay("intra")
        if cached is not None:
            return cached
        self._load(theta)
        n_comm = len(self.public.encoders.vocab.communities)
        with torch.no_grad():
            sums, counts = self.model.intra_sums(self.graph, n_comm)
        n = float(self.targets.numel())
        p = self.plan.privacy
        if p is None:
            self._charge("none", [], None, key="intra", value=(sums, counts, n))
            return sums, counts, n
        ev = self.plan.setup_events()
        lead = int(self.public.model_config.target_channel)
        noisy, e_sums = self._laplace(ev[0], sums[:, lead:])
        events = [e_sums]
        if lead:  # the community price level: its own sensitivity (1) and budget
            level, e_level = self._laplace(ev[3], sums[:, :1])
            noisy = torch.cat([level, noisy], dim=1)
            events.append(e_level)
        noisy_counts, e_counts = self._laplace(ev[1], counts)
        noisy_n, e_n = self._laplace(ev[2], n)
        out = (noisy, noisy_counts, float(noisy_n))
        events += [e_counts, e_n]
        self._charge(
            "laplace:intra_region",
            events,
            [o.tolist() if torch.is_tensor(o) else o for o in out],
            key="intra",
            value=out,
        )
        return out

    @exclusive
    def step(
        self,
        round_index: int,
        theta: dict[str, torch.Tensor],
        z: torch.Tensor,
        previous_aggregate: dict[str, torch.Tensor] | None,
    ) -> StepReply:
        """One round: clipped per-target gradients of model 1 and of ``z``, Gaussian noise,
        channel selection on the previous *public* aggregate, sparse upload.

        Sensitivity: :mod:`fedmugrep.training.per_target` — ``(1 + 2K) clip`` in L2 for each sum.
        """
        key = f"step-{round_index}"
        cached = self._replay(key)
        if cached is not None:
            return cached
        self._load(theta)
        p = self.plan.privacy
        clip = p.clip if p else 1e12
        z_clip = p.z_clip if p else 1e12
        sums = clipped_gradient_sums(
            self.model,
            self.graph,
            z,
            self.targets,
            clip=clip,
            z_clip=z_clip,
            joint=bool(p and p.joint_clip),
        )
        theta_sum, z_sum = sums.theta, sums.z
        channels = PublicAggregatePolicy().select(
            self.layout,
            upload_rate=self.plan.upload_rate,
            round_index=round_index,
            previous_aggregate=previous_aggregate,
        )
        events = self.plan.round_events(self.nm) if p and self.update_event is None else []
        mechanism = "gaussian:theta+z_grad"
        if self.update_event is not None:  # patent-literal Laplace on the update
            ev = self.update_event
            mech = LaplaceMechanism.from_event(ev)
            theta_sum = {n: mech.release(v) for n, v in theta_sum.items()}
            z_sum = mech.release(z_sum)
            n_coords = sum(v.numel() for v in theta_sum.values()) + z_sum.numel()
            events, mechanism = [mech.event(dimension=n_coords)], "laplace:theta+z_grad"
        elif p is not None:
            # noise every coordinate (only the selected channels are released; the rest is
            # dropped): float-safe Gaussian from a cryptographic source (OpenDP), one release
            # of the joint (theta, z) vector, or one each when they are clipped apart
            names = list(theta_sum)
            theta_mech, z_mech = self._round_mechanisms()
            if z_mech is None:
                *noisy, z_sum = theta_mech.release_many([theta_sum[n] for n in names] + [z_sum])
            else:
                noisy = theta_mech.release_many([theta_sum[n] for n in names])
                z_sum = z_mech.release(z_sum)
            theta_sum = dict(zip(names, noisy, strict=True))
        sparse = compress(theta_sum, self.layout, channels)
        # the exact training loss is not released under privacy (it would be an unnoised sum)
        loss_sum = sums.loss_sum if p is None else float("nan")
        reply = StepReply(sparse, z_sum, loss_sum, sparse.nbytes + z_sum.numel() * 4)
        self._charge(
            mechanism,
            events,
            sparse.to_bytes() + z_sum.numpy().tobytes(),
            key=key,
            value=reply,
        )
        return reply

    @exclusive
    def release_calibration(
        self, theta: dict[str, torch.Tensor], z: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Per-district summary d~ on validation rows: noisy sums of clipped squared standardised
        errors and of clipped log errors, and noisy counts (sensitivities in
        :meth:`FederationPlan.calibration_events`). The coordinator combines them across
        parties into the calibration of the predicted distributions."""
        cached = self._replay("calibration")
        if cached is not None:
            return cached
        self._load(theta)
        nd = len(self.public.encoders.vocab.districts)
        mask = torch.as_tensor(self.val)
        with torch.no_grad():
            pr = self.model(self.graph, z)
        err = (self.graph.y - pr.mu)[mask]
        zz = (err * torch.exp(-pr.log_sigma[mask])) ** 2
        d = self.graph.district[mask]
        p = self.plan.privacy
        z_max = p.calibration_z2_max if p else float("inf")
        z2 = torch.zeros(nd).index_add_(0, d, zz.clamp(max=z_max))
        e = torch.zeros(nd).index_add_(0, d, (err * self.public.encoders.y_scale).clamp(-1.0, 1.0))
        c = torch.bincount(d, minlength=nd).float()
        if p is None:
            self._charge("none", [], None, key="calibration", value=(z2, e, c))
            return z2, e, c
        released = [
            self._laplace(x, v)
            for x, v in zip(self.plan.calibration_events(), (z2, e, c), strict=True)
        ]
        out = tuple(v for v, _ in released)
        self._charge(
            "laplace:district_summary",
            [x for _, x in released],
            [o.tolist() for o in out],
            key="calibration",
            value=out,
        )
        return out

    @exclusive
    def evaluate(
        self, theta: dict[str, torch.Tensor], z: torch.Tensor, split: str = "test"
    ) -> dict:
        """Evaluate on this datasite's ``split`` rows.

        The exact metrics and the per-row predictions are the **data owner's** report: they are
        written under ``home/evaluations/<request>/`` and never returned. What is returned:

        * without privacy (owner opted in to exact releases): the exact aggregates;
        * with privacy: Laplace-noised sums, charged first (mechanism
          ``laplace:evaluation``): of ``min(|rel. error|, 0.5)``, ``min(|log error|, 0.5)``,
          of the 80 % interval hits, and the row count. A record changes its own term and, as
          an event-graph neighbour, the predictions of at most ``K`` other rows, each term in
          ``[0, 0.5]`` (hits ``[0, 1]``): L1 sensitivities ``0.5 (1 + K)``, ``0.5 (1 + K)``,
          ``1 + K`` and 1 (:meth:`FederationPlan.evaluation_events`). No error in euros is
          released (its sensitivity is the price range); owners see it in their report.
        """
        key = f"evaluate-{split}"
        p = self.plan.privacy
        if p is not None:
            cached = self._replay(key)
            if cached is not None:
                return cached
        self._load(theta)
        mask = {"test": self.test, "val": self.val, "train": self.train}[split]
        with torch.no_grad():
            pr = self.model(self.graph, z)
        enc = self.public.encoders
        mu = pr.mu.numpy() * enc.y_scale + enc.y_center
        sig = np.exp(pr.log_sigma.numpy()) * enc.y_scale
        price = self.frame["price"].to_numpy(np.float64)
        exact = distribution_metrics(price[mask], mu[mask], sig[mask])
        self._owner_report(split, mask, mu, sig, exact)
        rel = np.abs(np.exp(mu[mask]) - price[mask]) / price[mask]
        logerr = np.abs(mu[mask] - np.log(price[mask]))
        hits = np.abs(np.log(price[mask]) - mu[mask]) <= Z80 * sig[mask]
        if p is None:
            out = dict(exact)
            out["abs_err_sum"] = float(np.abs(np.exp(mu[mask]) - price[mask]).sum())
            out["rel_err_sum"] = float(rel.sum())
            out["log_err_sum"] = float(logerr.sum())
            out["covered"] = float(hits.sum())
            return out
        values = (
            float(np.minimum(rel, EVAL_TERM_CLIP).sum()),
            float(np.minimum(logerr, EVAL_TERM_CLIP).sum()),
            float(hits.sum()),
            float(mask.sum()),
        )
        released = [
            self._laplace(e, v) for e, v in zip(self.plan.evaluation_events(), values, strict=True)
        ]
        noisy = [float(v) for v, _ in released]
        out = {
            "rel_err_sum": noisy[0],
            "log_err_sum": noisy[1],
            "covered": noisy[2],
            "n": max(noisy[3], 1.0),
            "released": "laplace",
            "term_clip": EVAL_TERM_CLIP,
        }
        self._charge("laplace:evaluation", [x for _, x in released], noisy, key=key, value=out)
        return out

    def _owner_report(
        self, split: str, mask: np.ndarray, mu: np.ndarray, sig: np.ndarray, exact: dict
    ) -> None:
        """Exact metrics and per-row predictions for the data owner (stays in the home)."""
        folder = self.home / "evaluations" / self._request_folder()
        folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        rows = self.frame.loc[mask]
        cols = [
            c
            for c in ("transaction_id", "date", "community", "district", "lat", "lon")
            if c in rows
        ]
        pred = rows[cols].copy()
        pred.insert(0, "agency", self.name)
        pred["price"] = rows["price"].to_numpy()
        pred["pred_median"] = bounded_exp(mu[mask])
        pred["pred_lo80"] = bounded_exp(mu[mask] - Z80 * sig[mask])
        pred["pred_hi80"] = bounded_exp(mu[mask] + Z80 * sig[mask])
        csv_path = folder / f"{self.name}-{split}-predictions.csv"
        json_path = folder / f"{self.name}-{split}.json"
        pred.to_csv(csv_path, index=False)
        json_path.write_text(json.dumps(exact, indent=2))
        for path in (csv_path, json_path):
            _private_file(path)

    @exclusive
    def appraise(
        self,
        theta: dict[str, torch.Tensor],
        z: torch.Tensor,
        properties: pd.DataFrame,
        *,
        epsilon: float,
        bounds: Any = None,
        id_column: str = "transaction_id",
        source: Any = None,
    ) -> pd.DataFrame:
        """Valuation (C7) of ``properties`` with this datasite's sales as event-graph neighbours;
        the noised result is charged to the ledger (mechanism ``laplace:appraisal``) first.

        Privacy (details in :class:`~fedmugrep.federation.valuation.PrivateAppraisal`): per
        property the released value is the event-view correction (mean with neighbours minus
        the public mean without) clipped to ``[-c, c]``; a sale can change only the properties
        of its community dated up to ``max_days`` after it, at most ``M`` (public, from the
        properties), so the L1 sensitivity is ``M * 2c``; Laplace noise of scale
        ``b ~ M * 2c / epsilon``. The interval is widened for the noise (column
        ``noise_scale_log``). A repeated identical request gets the same release back, uncharged.

        Args:
            theta: model 1's state (``EventModel.state_dict()``).
            z: the released region representations ``[C, z_dim]``.
            properties: transactions schema minus price, with ``community`` and ``district``.
            epsilon: epsilon charged for this call (> 0).
            bounds: an :class:`~fedmugrep.federation.valuation.AppraisalBounds` (public clips).
            id_column: identifier column of ``properties``.
            source: random bits for the noise (default: secure).

        Returns:
            One row per property: ``id_column``, ``pred_median``, ``pred_lo80``,
            ``pred_hi80``, ``sigma_log``, ``noise_scale_log``.

        Raises:
            PrivacyParameterError: ``epsilon <= 0``.
            BudgetExceededError: the owner's cap refuses the release (nothing released).
        """
        job = PrivateAppraisal(
            self.public,
            properties,
            epsilon=epsilon,
            bounds=bounds,
            id_column=id_column,
            source=source,
        )
        key = f"appraise-{job.digest(theta, z)}"
        cached = self._replay(key)
        if cached is not None:
            return cached.copy()
        self._load(theta)
        table, events, payload = job.release(self.model, z, self.frame)
        self._charge(APPRAISAL_MECHANISM, events, payload, key=key, value=table)
        return table


class RegionParty(_ReleasingParty):
    """The region datasite's side: model 2 and its optimiser never leave it.

    With privacy (``PrivacyPlan.region_epsilon`` set) every ``z`` that leaves is noised and
    charged to the region datasite's ledger first (mechanism ``laplace:region_z``). Privacy
    unit: one community's row of the community table (with its mobility flows). Model 2's
    encoder output is ``tanh``-bounded (each entry in ``[-1, 1]``) and, through the
    community GNN, one row can move every community's representation, so the L1 sensitivity of
    the released ``[C, region_hidden]`` block is ``2 * region_hidden * C`` (conservative: no
    reach bound is assumed). The noised block is clamped back to ``[-1, 1]`` (post-processing).
    The last column of ``z`` (the community price level, ``ModelConfig.target_channel``) is
    the transaction parties' own noised release passed through: it costs the region nothing.

    A ``z`` is released once per model-2 state (a counter bumped by every update), so the
    forward of round ``r + 1`` and an evaluation between them share one release, and a
    retried call replays it.
    """

    def __init__(
        self,
        community_graph: CommunityGraph,
        cfg: ModelConfig,
        plan: FederationPlan,
        home: Path,
        *,
        init_state: dict[str, torch.Tensor] | None = None,
        name: str = "region",
        data_scientist: str = "data-scientist",
        request_id: str = "local",
        ledger: Ledger | None = None,
    ) -> None:
        self.comm = community_graph
        self.home = Path(home)
        self.home.mkdir(parents=True, exist_ok=True)
        self.name, self.plan, self.cfg = name, plan, cfg
        self.data_scientist, self.request_id = data_scientist, request_id
        for field_name in ("region_hidden", "intra_dim", "target_channel"):
            if getattr(plan, field_name) != getattr(cfg, field_name):
                raise ConfigError(
                    f"this datasite refuses the plan: its {field_name} is "
                    f"{getattr(plan, field_name)!r} but the model's is "
                    f"{getattr(cfg, field_name)!r}; derive the model configuration from the plan"
                )
        if not cfg.bounded_z:
            raise ConfigError(
                "this datasite refuses the plan: bounded_z=False leaves z unbounded, so its "
                "2·H·C sensitivity does not hold; keep bounded_z=True"
            )
        self.ledger = ledger if ledger is not None else Ledger(self.home)  # the datasite's
        self._check_ledger_intact()
        torch.manual_seed(plan.seed + 1)
        self.model = RegionModel(cfg)
        if init_state is not None:  # public starting weights (e.g. mock pretraining)
            self.model.load_state_dict(init_state)
        self.opt = torch.optim.Adam(self.model.parameters(), lr=plan.region_lr)
        self._intra: torch.Tensor | None = None
        self.version = 0  # model-2 updates so far
        self.events = plan.region_events(community_graph.num_communities)

    @exclusive
    def forward(self, round_index: int, pooled_intra: torch.Tensor) -> torch.Tensor:
        """``z`` for the current model 2 (noised and charged under privacy)."""
        self._intra = pooled_intra
        key = f"z-v{self.version}"
        if self.events:
            cached = self._replay(key)
            if cached is not None:
                return cached
        with torch.no_grad():
            z = self.model(self.comm, pooled_intra)
        if not self.events:
            return z
        ev = self.events[0]
        p = self.plan.privacy
        assert p is not None
        h = self.cfg.region_hidden
        noisy, charged = self._laplace(ev, z[:, :h])
        noisy = noisy.clamp(-1.0, 1.0)  # post-processing: z entries lie in [-1, 1]
        out = torch.cat([noisy, z[:, h:]], dim=1)
        self._charge(
            "laplace:region_z",
            [charged],
            noisy.numpy().tobytes(),
            key=key,
            value=out,
        )
        return out

    @exclusive
    def backward(self, round_index: int, z_grad: torch.Tensor) -> torch.Tensor:
        """Update model 2 with the pooled ``z`` gradient of ``round_index``; return the ``z`` of
        the new state (its release, charged here, is the one the next forward would make and
        would replay)."""
        assert self._intra is not None, "forward must run first"
        self.opt.zero_grad()
        z = self.model(self.comm, self._intra)
        z.backward(z_grad)
        self.opt.step()
        self.version += 1
        state = {
            "model": self.model.state_dict(),
            "opt": self.opt.state_dict(),
            "round": round_index,
            "version": self.version,
        }
        torch.save(state, self.home / "region_model.pt")
        # per-round snapshots (last three) so a resumed coordinator can rewind model 2 exactly
        torch.save(state, self.home / f"region_model.r{round_index}.pt")
        stale = self.home / f"region_model.r{round_index - 3}.pt"
        stale.unlink(missing_ok=True)
        return self.forward(round_index + 1, self._intra)

    @exclusive
    def restore(self, round_index: int) -> None:
        """Rewind model 2 and its optimiser to the end of ``round_index`` (for a resumed run)."""
        snap = self.home / f"region_model.r{round_index}.pt"
        if not snap.exists():
            raise FileNotFoundError(
                f"no region snapshot for round {round_index} in {self.home}; start a new run"
            )
        state = torch.load(snap, weights_only=False)
        self.model.load_state_dict(state["model"])
        self.opt.load_state_dict(state["opt"])
        self.version = int(state.get("version", round_index + 1))
