"""Centralized training of the fed-MugRep model on pooled data (the reference run).

The federated system is judged against this: same model, same split, same features.
"""

from __future__ import annotations

import copy
import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from fedmugrep.data.loading import (
    assign_regions,
    load_communities,
    load_mobility,
    load_transactions,
)
from fedmugrep.data.synthetic import bayes_floor
from fedmugrep.errors import DataValidationError
from fedmugrep.models.mugrep import ModelConfig, MugRepModel
from fedmugrep.training.baselines import run_baselines
from fedmugrep.training.metrics import Z80, bounded_exp, distribution_metrics
from fedmugrep.training.prepare import (
    GraphConfig,
    community_graph,
    fit_encoders,
    temporal_split,
    transaction_graph,
)


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation settings for centralized training."""

    epochs: int = 400
    lr: float = 3e-3
    weight_decay: float = 1e-4
    eval_every: int = 5
    patience: int = 12
    aux_weight: float = 0.5
    seed: int = 0
    hidden: int = 64


def load_inputs(
    transaction_files: list[Path], communities_file: Path | None, mobility_file: Path | None
) -> tuple[pd.DataFrame, pd.DataFrame | None, pd.DataFrame | None]:
    """Load and validate every file; pool transactions (ids must stay unique across files)."""
    frames = [load_transactions(f) for f in transaction_files]
    tx = pd.concat(frames, ignore_index=True) if len(frames) > 1 else frames[0]
    dup = tx["transaction_id"].duplicated()
    if dup.any():
        tid = tx["transaction_id"][dup].iloc[0]
        raise DataValidationError(
            file=", ".join(map(str, transaction_files)),
            column="transaction_id",
            problem=f"transaction_id '{tid}' appears in more than one file",
            fix="give every transaction a unique id across files, or drop the duplicate",
        )
    comms = load_communities(communities_file) if communities_file else None
    mob = load_mobility(mobility_file, comms) if mobility_file else None
    tx = assign_regions(tx, comms)
    tx = tx.sort_values("date", kind="stable").reset_index(drop=True)
    return tx, comms, mob


@dataclass
class CentralInputs:
    """What centralized training runs on: the temporal split, the encoders fitted on its
    training rows, the transaction graph, the community graph and the model configuration."""

    split: Any
    enc: Any
    graph: Any
    comm: Any
    cfg: ModelConfig


def central_inputs(
    tx: pd.DataFrame,
    comms: pd.DataFrame | None,
    mob: pd.DataFrame | None,
    gcfg: GraphConfig,
    *,
    hidden: int | None = None,
) -> CentralInputs:
    """The graphs and model configuration of centralized training on pooled ``tx``
    (``hidden``: the model width; ``None``: :class:`ModelConfig`'s default)."""
    split = temporal_split(tx["date"])
    enc = fit_encoders(tx[split.train], comms)
    known = np.ones(len(tx), dtype=bool)  # a sale's price is known to later targets
    g = transaction_graph(tx, enc, gcfg, known=known, intra_mask=split.train)
    comm = community_graph(enc, gcfg, comms, mob, tx[split.train])
    cfg = ModelConfig(
        feature_dim=g.x.shape[1],
        attr_dim=comm.attrs.shape[1],
        n_districts=len(enc.vocab.districts),
        k=gcfg.k,
        max_days=gcfg.max_days,
        max_km=gcfg.max_km,
        **({} if hidden is None else {"hidden": hidden}),
    )
    return CentralInputs(split, enc, g, comm, cfg)


def train_central(
    tx: pd.DataFrame,
    comms: pd.DataFrame | None,
    mob: pd.DataFrame | None,
    *,
    gcfg: GraphConfig | None = None,
    tcfg: TrainConfig | None = None,
    progress: bool = True,
    with_baselines: bool = True,
) -> dict:
    """Train on pooled data with a temporal split; return the metrics report."""
    gcfg = gcfg or GraphConfig()
    tcfg = tcfg or TrainConfig()
    t0 = time.perf_counter()
    torch.manual_seed(tcfg.seed)
    np.random.seed(tcfg.seed)
    inputs = central_inputs(tx, comms, mob, gcfg, hidden=tcfg.hidden)
    split, enc, g, comm = inputs.split, inputs.enc, inputs.graph, inputs.comm
    model = MugRepModel(inputs.cfg)
    opt = torch.optim.Adam(model.parameters(), lr=tcfg.lr, weight_decay=tcfg.weight_decay)
    train_m = torch.as_tensor(split.train)
    val_m = torch.as_tensor(split.val)
    history: list[dict] = []
    best = (float("inf"), None, 0)
    bad = 0
    bar = tqdm(
        range(tcfg.epochs),
        desc="train-central",
        disable=not progress,
        unit="epoch",
        mininterval=1.0,
    )
    for epoch in bar:
        model.train()
        opt.zero_grad()
        pred = model(g, comm)
        loss = pred.nll(g.y, train_m, tcfg.aux_weight)
        loss.backward()
        opt.step()
        if epoch % tcfg.eval_every == 0 or epoch == tcfg.epochs - 1:
            model.eval()
            with torch.no_grad():
                p = model(g, comm)
                val_nll = float(p.nll(g.y, val_m, 0.0))
                val_mae = float((p.mu[val_m] - g.y[val_m]).abs().mean() * enc.y_scale)
            train_nll = loss.item()
            history.append(
                {"epoch": epoch, "train_nll": train_nll, "val_nll": val_nll, "val_mae_log": val_mae}
            )
            bar.set_postfix(
                train_nll=f"{train_nll:.3f}", val_mae_log=f"{val_mae:.4f}", refresh=False
            )
            if val_nll < best[0] - 1e-4:
                best, bad = (val_nll, copy.deepcopy(model.state_dict()), epoch), 0
            else:
                bad += 1
                if bad >= tcfg.patience:
                    break
    model.load_state_dict(best[1])
    model.eval()
    with torch.no_grad():
        sigma_scale = model.event_model.calibrate_sigma(model(g, comm), g.y, val_m)
        p = model(g, comm)
    mu_log = p.mu.numpy() * enc.y_scale + enc.y_center
    sigma_log = np.exp(p.log_sigma.numpy()) * enc.y_scale
    price = tx["price"].to_numpy(np.float64)
    test = split.test
    report: dict = {
        "model": distribution_metrics(price[test], mu_log[test], sigma_log[test]),
        "split": {
            "train": int(split.train.sum()),
            "val": int(split.val.sum()),
            "test": int(test.sum()),
            "val_start": str(split.val_start.date()),
            "test_start": str(split.test_start.date()),
        },
        "graph_config": asdict(gcfg),
        "train_config": asdict(tcfg),
        "best_epoch": best[2],
        "sigma_scale": sigma_scale,
        "history": history,
        "event_graph_edges": int(g.event_index.shape[1]),
    }
    report["model"]["train_seconds"] = time.perf_counter() - t0
    if with_baselines:
        tb = time.perf_counter()
        report["baselines"] = run_baselines(
            g.x.numpy(),
            g.district.numpy(),
            np.log(price),
            price,
            split.train | split.val,
            test,
            n_districts=len(enc.vocab.districts),
            seed=tcfg.seed,
        )
        report["baselines_seconds"] = time.perf_counter() - tb
    report["_artifacts"] = {
        "model": model,
        "encoders": enc,
        "split": split,
        "mu_log": mu_log,
        "sigma_log": sigma_log,
    }
    return report


def attach_bayes_floor(report: dict, tx: pd.DataFrame, transaction_files: list[Path]) -> None:
    """If the files come from ``fedmugrep synth``, add the Bayes floor on the test split."""
    folder = Path(transaction_files[0]).parent
    meta_f, truth_f = folder / "metadata.json", folder / "truth.csv"
    if not (meta_f.exists() and truth_f.exists()):
        return
    meta = json.loads(meta_f.read_text())
    truth = pd.read_csv(truth_f, dtype={"transaction_id": str})
    split = report["_artifacts"]["split"]
    ids = tx["transaction_id"][split.test].astype(str)
    sigma = float(meta.get("sigma", meta.get("config", {}).get("sigma")))
    report["bayes_floor"] = bayes_floor(truth, sigma, ids=ids)


def public_report(report: dict) -> dict:
    return {k: v for k, v in report.items() if not k.startswith("_")}


def central_reference(
    transaction_files: list[Path],
    communities_file: Path | None,
    mobility_file: Path | None,
    *,
    tcfg: TrainConfig | None = None,
    progress: bool = True,
    with_baselines: bool = True,
) -> dict:
    """Load and validate the files, train centrally, add the Bayes floor when the files come
    from ``fedmugrep synth``; return the JSON-ready report (what ``train-central`` writes)."""
    report, _predictions = central_run(
        transaction_files,
        communities_file,
        mobility_file,
        tcfg=tcfg,
        progress=progress,
        with_baselines=with_baselines,
    )
    return report


def central_run(
    transaction_files: list[Path],
    communities_file: Path | None,
    mobility_file: Path | None,
    *,
    tcfg: TrainConfig | None = None,
    progress: bool = True,
    with_baselines: bool = True,
) -> tuple[dict, pd.DataFrame]:
    """:func:`central_reference`'s report and the test-split predictions of the model.

    Returns:
        The JSON-ready report, and one row per test sale: ``transaction_id``, ``date``,
        ``community``, ``district`` (when the sales have one), ``lat``, ``lon``, ``price``,
        ``pred_median`` and the 80% interval ``pred_lo80``, ``pred_hi80`` (what
        ``fedmugrep report`` maps and plots).
    """
    tx, comms, mob = load_inputs(list(transaction_files), communities_file, mobility_file)
    report = train_central(
        tx, comms, mob, tcfg=tcfg, progress=progress, with_baselines=with_baselines
    )
    attach_bayes_floor(report, tx, list(transaction_files))
    art = report["_artifacts"]
    test = art["split"].test
    mu, sigma = art["mu_log"][test], art["sigma_log"][test]
    cols = [c for c in ("transaction_id", "date", "community", "district", "lat", "lon") if c in tx]
    predictions = tx.loc[test, cols + ["price"]].reset_index(drop=True)
    predictions["pred_median"] = bounded_exp(mu)
    predictions["pred_lo80"] = bounded_exp(mu - Z80 * sigma)
    predictions["pred_hi80"] = bounded_exp(mu + Z80 * sigma)
    return public_report(report), predictions
