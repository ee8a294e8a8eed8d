"""Training speed on the CPU and, where one is present, on a CUDA GPU (the project never needs one).

Times full-batch training epochs of the centralized fed-MugRep model (``MugRepModel``: event
encoder, intra-region encoder, community GNN, district heads; forward + backward + Adam step) on
the default synthetic city, on every device available: ``cpu`` (with the machine's threads) and
``cuda`` when ``torch.cuda.is_available()``. The graphs are built once on the CPU with the same
code as ``fedmugrep train-central`` and moved to the device. Median seconds per epoch after
warm-up; the JSON records the device name.

Run: ``.venv/bin/python benchmarks/device_training.py [--quick] [--out DIR] [--epochs N]``.
"""

from __future__ import annotations

import dataclasses
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common  # noqa: E402


def _configure(parser: Any) -> None:
    parser.add_argument("--epochs", type=int, default=30, help="timed epochs per device")


def _to(obj: Any, device: str) -> Any:
    """A copy of a graph dataclass / dict / tensor with every tensor on ``device``."""
    import torch

    if torch.is_tensor(obj):
        return obj.to(device)
    if isinstance(obj, dict):
        return {k: _to(v, device) for k, v in obj.items()}
    if dataclasses.is_dataclass(obj):
        return dataclasses.replace(
            obj, **{f.name: _to(getattr(obj, f.name), device) for f in dataclasses.fields(obj)}
        )
    return obj


def _time_device(device: str, g: Any, comm: Any, cfg: Any, epochs: int) -> dict[str, Any]:
    import torch

    from fedmugrep.models.mugrep import MugRepModel

    torch.manual_seed(0)
    model = MugRepModel(cfg).to(device)
    g_d, c_d = _to(g, device), _to(comm, device)
    g_d.event_feat = None  # recomputed on the device
    mask = g_d.intra_mask
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)

    def epoch() -> float:
        opt.zero_grad()
        loss = model(g_d, c_d).nll(g_d.y, mask)
        loss.backward()
        opt.step()
        return float(loss)  # forces the device to finish

    for _ in range(3):  # warm-up (CUDA kernels, allocator)
        epoch()
    times, losses = [], []
    for _ in range(epochs):
        t0 = time.perf_counter()
        losses.append(epoch())
        times.append(time.perf_counter() - t0)
    name = torch.cuda.get_device_name(0) if device == "cuda" else _common.cpu_model()
    return {
        "device": device,
        "device_name": name,
        "torch_threads": torch.get_num_threads(),
        "median_epoch_seconds": _common.median(times),
        "first_loss": losses[0],
        "last_loss": losses[-1],
    }


def main(argv: list[str] | None = None) -> int:
    args = _common.parse_args(__doc__.splitlines()[0], argv, _configure)
    import tempfile
    from dataclasses import replace

    import torch

    from fedmugrep.data.synthetic import CityConfig, make_city, write_city
    from fedmugrep.training.central import central_inputs, load_inputs
    from fedmugrep.training.prepare import GraphConfig

    cfg_city = CityConfig() if not args.quick else replace(CityConfig(), n_transactions=1500)
    epochs = 3 if args.quick else args.epochs
    with tempfile.TemporaryDirectory() as tmp:
        city = Path(tmp)
        write_city(make_city(cfg_city), city)
        tx, comms, mob = load_inputs(
            sorted(city.glob("transactions_agency*.csv")),
            city / "communities.csv",
            city / "mobility.csv",
        )
    inputs = central_inputs(tx, comms, mob, GraphConfig())
    g, comm, cfg = inputs.graph, inputs.comm, inputs.cfg
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    rows = [_time_device(d, g, comm, cfg, epochs) for d in devices]
    data = {
        "benchmark": "device_training",
        "machine": _common.machine_info(),
        "quick": args.quick,
        "transactions": len(tx),
        "epochs_timed": epochs,
        "rows": rows,
        "cuda_available": torch.cuda.is_available(),
    }
    if len(rows) > 1:
        data["speedup_cuda_vs_cpu"] = (
            rows[0]["median_epoch_seconds"] / rows[1]["median_epoch_seconds"]
        )
    _common.write_json(args.out, "device_training", data)

    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.6))
    labels = [f"{r['device']}\n{r['device_name'][:28]}" for r in rows]
    vals = [r["median_epoch_seconds"] for r in rows]
    ax.bar(labels, vals, color=["tab:blue", "tab:green"][: len(rows)])
    for i, v in enumerate(vals):
        ax.text(i, v, f"{v:.3f} s", ha="center", va="bottom")
    ax.set_ylabel("median seconds per full-batch epoch")
    ax.set_title(f"Centralized fed-MugRep training, {len(tx):,} sales")
    fig.tight_layout()
    fig.savefig(args.out / "device_training.png", dpi=110)
    plt.close(fig)
    for r in rows:
        print(f"{r['device']:>5} ({r['device_name']}): {r['median_epoch_seconds']:.4f} s/epoch")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
