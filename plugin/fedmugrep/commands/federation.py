"""``fedmugrep federation check|submit|status|train``: the data scientist against other
organisations' datasites, reached by URL.

The data scientist describes the federation in a TOML file (no password in it)::

    [data_scientist]
    email = "dana@uni.example"
    password_env = "FEDMUGREP_DS_PASSWORD"    # the password: this variable, or a prompt

    [training]
    home = "runs/federation"   # the session: public artefacts, checkpoint, model (relative
    rounds = 30                # to this file)
    epsilon = 8.0              # what each datasite is asked to spend (delta 1e-5)
    pretrain_epochs = 150      # public pretraining on the mocks
    # lr = 0.01, upload_rate = 1.0, delta = 1e-5, seed = 0, no_privacy = false

    [[datasite]]
    name = "agency-a"
    url = "http://127.0.0.1:8081"
    role = "transactions"      # or "region" (at most one)

``check`` logs into every datasite and shows what it holds: each dataset's mock schema, the
mock's size and what it is drawn from, and the state of this session's request. ``submit``
derives the public artefacts from the mocks, pretrains on them and submits one training request
with its privacy contract to every datasite; each owner reviews it with ``fedmugrep requests``.
``status`` shows each request's review state (pending, approved, or denied with the owner's
reason). ``train`` trains once every owner approved, exports the model for ``fedmugrep
appraise`` to ``HOME/model.pt`` and writes what was released to ``HOME/report.json``
(``fedmugrep report HOME`` draws its page); ``train --resume`` continues a crashed training
from its checkpoint (nothing released is charged again).

Exit codes (see :mod:`fedmugrep.cli`): 0 ok; 1 a datasite does not answer, refuses the
login, or denied the request, or a request is not approved yet; 2 a bad federation file;
3 an owner's cap refused a release.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fedmugrep.cli import EXIT_USAGE
from fedmugrep.commands.users import DEFAULT_DS_PASSWORD_ENV, read_password
from fedmugrep.errors import ConfigError
from fedmugrep.tomlfile import read_toml

__all__ = ["FederationFile", "load_federation_file", "register"]

EPILOG = """\
Examples (each organisation runs its own datasite; see the README's "your own data"):
  export FEDMUGREP_DS_PASSWORD=...          # the password your datasites' owners gave you
  fedmugrep federation check  --file federation.toml
  fedmugrep federation submit --file federation.toml
  fedmugrep federation status --file federation.toml
  fedmugrep federation train  --file federation.toml          # once every owner approved
  fedmugrep federation train  --file federation.toml --resume # after a crash
  fedmugrep report runs/federation           # the page of what the run released
  fedmugrep appraise --model runs/federation/model.pt --properties listings.csv
"""

_SECTIONS = {
    "data_scientist": {"email", "password_env", "name"},
    "training": {
        "home",
        "rounds",
        "epsilon",
        "delta",
        "lr",
        "pretrain_epochs",
        "upload_rate",
        "seed",
        "no_privacy",
    },
    "datasite": {"name", "url", "role"},
}


@dataclass(frozen=True)
class FederationFile:
    """A data scientist's federation file (layout in the module doc).

    Attributes:
        path: the file.
        email: the data scientist's account e-mail on every datasite.
        password_env: the environment variable the password is read from.
        home: the session's folder.
        training: the ``[training]`` table.
        sites: ``(name, url, role)`` per datasite, in file order.
    """

    path: Path
    email: str
    password_env: str
    home: Path
    training: dict[str, Any]
    sites: tuple[tuple[str, str, str], ...]

    def plan(self) -> Any:
        """The :class:`~fedmugrep.federation.plan.FederationPlan` of ``[training]``."""
        from fedmugrep.federation.plan import FederationPlan, PrivacyPlan  # deferred: torch

        t = self.training
        privacy = None
        if not t.get("no_privacy", False):
            eps = float(t.get("epsilon", 8.0))
            privacy = PrivacyPlan.for_epsilon(
                eps, delta=float(t.get("delta", 1e-5)), region_epsilon=eps
            )
        lr = float(t.get("lr", 0.01))
        try:
            return FederationPlan(
                rounds=int(t.get("rounds", 30)),
                lr=lr,
                region_lr=lr,
                upload_rate=float(t.get("upload_rate", 1.0)),
                privacy=privacy,
                pretrain_epochs=int(t.get("pretrain_epochs", 150)),
                seed=int(t.get("seed", 0)),
            )
        except (ConfigError, TypeError, ValueError) as exc:
            raise ConfigError(f"{self.path}: [training] {exc}") from None


def load_federation_file(path: Path) -> FederationFile:
    """Read and check a federation file.

    Raises:
        ConfigError: naming the file and the key: unknown sections or keys, a password in the
            file, a datasite without name, URL or role, duplicate names.
    """
    raw = read_toml(path, what="federation file")
    for section, value in raw.items():
        if section not in _SECTIONS:
            raise ConfigError(
                f"{path}: unknown section [{section}]; valid: [data_scientist], [training], "
                "[[datasite]]"
            )
        tables = value if isinstance(value, list) else [value]
        for table in tables:
            if not isinstance(table, dict):
                raise ConfigError(f"{path}: [{section}] must be a table")
            if section == "data_scientist" and "password" in table:
                raise ConfigError(
                    f"{path}: [data_scientist] password: a password never goes in a file beside "
                    "the code; remove it and set the variable named by password_env (or be "
                    "prompted)"
                )
            unknown = sorted(set(table) - _SECTIONS[section])
            if unknown:
                raise ConfigError(
                    f"{path}: unknown key(s) {unknown} in [{section}]; valid keys: "
                    f"{sorted(_SECTIONS[section])}"
                )
    ds = raw.get("data_scientist", {})
    if "email" not in ds or "@" not in str(ds["email"]):
        raise ConfigError(f'{path}: [data_scientist] email = "you@example.org" is missing')
    sites_raw = raw.get("datasite", [])
    if not isinstance(sites_raw, list) or not sites_raw:
        raise ConfigError(f"{path}: no [[datasite]] tables; add one per datasite (name, url, role)")
    sites = []
    for i, site in enumerate(sites_raw, start=1):
        for key in ("name", "url", "role"):
            if not isinstance(site.get(key), str) or not site[key]:
                raise ConfigError(f'{path}: datasite #{i} has no {key}; add {key} = "..."')
        if not site["url"].startswith(("http://", "https://")):
            raise ConfigError(
                f"{path}: datasite '{site['name']}': url must start with http:// or https:// "
                f"(got {site['url']!r})"
            )
        if site["role"] not in ("transactions", "region"):
            raise ConfigError(
                f"{path}: datasite '{site['name']}': role must be 'transactions' or 'region' "
                f"(got {site['role']!r})"
            )
        sites.append((site["name"], site["url"].rstrip("/"), site["role"]))
    names = [s[0] for s in sites]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise ConfigError(f"{path}: datasite {dup[0]!r} is listed twice")
    training = dict(raw.get("training", {}))
    home = Path(str(training.pop("home", "federation-run")))
    if not home.is_absolute():
        home = Path(path).resolve().parent / home
    return FederationFile(
        path=Path(path),
        email=str(ds["email"]).strip(),
        password_env=str(ds.get("password_env", DEFAULT_DS_PASSWORD_ENV)),
        home=home,
        training=training,
        sites=tuple(sites),
    )


def register(subparsers: Any) -> argparse.ArgumentParser:
    """Add the ``federation`` sub-command (``check``, ``submit``, ``status``, ``train``)."""
    parser = subparsers.add_parser(
        "federation",
        help="the data scientist's training against datasites reached by URL",
        description="Check, submit to, follow and train on datasites that other "
        "organisations run, from a federation file.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    helps = {
        "check": "log in everywhere; show each datasite's mock schema and request state",
        "submit": "derive public artefacts from the mocks, submit the training request",
        "status": "each request's review state (pending / approved / denied: reason)",
        "train": "train once every owner approved; export the model",
    }
    for name, text in helps.items():
        p = actions.add_parser(
            name,
            help=text,
            description=text[0].upper() + text[1:] + ".",
            epilog=EPILOG,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        p.add_argument("--file", type=Path, required=True, metavar="TOML", help="federation file")
        p.add_argument("--json", action="store_true", help="print JSON instead of text")
        if name in ("train", "submit"):
            p.add_argument("--quiet", action="store_true", help="no progress bar")
        if name == "train":
            p.add_argument("--resume", action="store_true", help="continue a crashed training")
            p.add_argument(
                "--call-timeout",
                type=float,
                default=600.0,
                metavar="SECONDS",
                help="give up on a datasite that does not answer one call in this time",
            )
        p.set_defaults(func=_usage(globals()[f"run_{name}"]))
    return parser


def _usage(func: Any) -> Any:
    """Load the federation file first: a bad file exits 2, before anything is contacted."""

    def wrapper(args: argparse.Namespace) -> int:
        try:
            fed = load_federation_file(args.file)
            plan = fed.plan()
        except ConfigError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return EXIT_USAGE
        return func(args, fed, _session(fed, plan))

    return wrapper


def _session(fed: FederationFile, plan: Any) -> Any:
    """The data scientist's session, logged into every datasite."""
    from fedmugrep.pysyft.scientist import DataScientistSession  # deferred: loads syft, torch

    password = read_password(fed.password_env, what=f"{fed.email} (federation {fed.path})")
    session = DataScientistSession(
        {n: url for n, url, _ in fed.sites},
        {n: role for n, _, role in fed.sites},
        email=fed.email,
        password=password,
        plan=plan,
        home=fed.home,
    )
    session.connect()
    return session


def run_check(args: argparse.Namespace, fed: FederationFile, session: Any) -> int:
    """Execute ``fedmugrep federation check``."""
    sites = session.sites()
    if args.json:
        print(json.dumps([s.__dict__ for s in sites], indent=2, default=str))
        return 0
    for s, (_, url, _) in zip(sites, fed.sites, strict=True):
        print(f"datasite '{s.name}' ({s.role}) at {url}: logged in as {fed.email}")
        for dataset, schema in s.schema.items():
            print(f"  dataset '{dataset}': mock of {s.mock_rows[dataset]} rows")
            if s.description.get(dataset):
                print(f"    {s.description[dataset]}")
            cols = ", ".join(f"{c} ({t})" for c, t in schema.items())
            print(f"    columns: {cols}")
        for line in budget_lines(s, fed.email):
            print(f"  {line}")
        print(f"  request: {s.request}")
    return 0


def budget_lines(site: Any, email: str) -> list[str]:
    """What ``check`` says about a data scientist's budget on one datasite: cap, spent and
    remaining per dataset, and whether the plan's projected epsilon fits."""
    need = site.plan_epsilon
    plan_text = (
        "this plan needs no budget (no privacy)"
        if need is None
        else (f"this plan spends up to epsilon {need:.4g}")
    )
    if site.budget is None:
        return [f"budget: not published by this datasite (ask its owner); {plan_text}"]
    capped = [b for b in site.budget if b["cap_epsilon"] is not None]
    if not capped:
        return [
            f"budget: no cap set for {email} yet, so every charged release would be refused; "
            "the owner sets one with fedmugrep budget set --config TOML --data-scientist "
            f"{email} --epsilon EPS; {plan_text}"
        ]
    lines = []
    for b in capped:
        remaining = float(b["remaining_epsilon"])
        verdict = ""
        if need is not None:
            verdict = (
                f"; enough for this plan (up to {need:.4g})"
                if remaining >= need * (1 - 1e-9)
                else f"; NOT enough for this plan (up to {need:.4g}): ask the owner to raise "
                "the cap, or plan a smaller epsilon"
            )
        lines.append(
            f"budget '{b['dataset']}': remaining epsilon {remaining:.4g} of {b['cap_epsilon']:.4g}"
            f" (spent {b['spent_epsilon']:.4g}){verdict}"
        )
    return lines


def run_submit(args: argparse.Namespace, fed: FederationFile, session: Any) -> int:
    """Execute ``fedmugrep federation submit``."""
    run_id = session.submit(progress=not args.quiet)
    states, ids = _review(session)
    if args.json:
        print(json.dumps({"run_id": run_id, "requests": states, "request_ids": ids}, indent=2))
        return 0
    print(f"submitted training request {run_id} to {len(states)} datasites:")
    for name, state in states.items():
        print(f"  {name}: {state}{_id_note(ids.get(name))}")
    print(
        "next: ask each owner to review it (fedmugrep requests show --config THEIR.toml ID); "
        f"then fedmugrep federation status --file {fed.path}"
    )
    return 0


def _review(session: Any) -> tuple[dict[str, str], dict[str, str | None]]:
    """Each datasite's review state and request id."""
    review = session.review()
    return {n: st for n, (st, _) in review.items()}, {n: i for n, (_, i) in review.items()}


def _id_note(request_id: str | None) -> str:
    # 8 characters, the id prefix `fedmugrep requests list` shows the owner
    return f" (request {request_id[:8]})" if request_id else ""


def run_status(args: argparse.Namespace, fed: FederationFile, session: Any) -> int:
    """Execute ``fedmugrep federation status``."""
    states, ids = _review(session)
    if args.json:
        print(json.dumps({"requests": states, "request_ids": ids}, indent=2))
        return 0
    for name, state in states.items():
        print(f"  {name}: {state}{_id_note(ids.get(name))}")
    if all(s == "approved" for s in states.values()):
        print(f"every owner approved: fedmugrep federation train --file {fed.path}")
    return 0


def run_train(args: argparse.Namespace, fed: FederationFile, session: Any) -> int:
    """Execute ``fedmugrep federation train``."""
    from fedmugrep.federation.valuation import ValuationModel  # deferred: loads torch
    from fedmugrep.report.run_summary import federation_report  # deferred: loads torch

    res = session.train(progress=not args.quiet, call_timeout=args.call_timeout, resume=args.resume)
    geography = session.geography_for_model()
    model = ValuationModel.from_result(res, geography=geography)
    model_file = model.save(fed.home / "model.pt")
    report = federation_report(res, session.plan, model_file=model_file, sites=fed.sites)
    released = report["released"]
    (fed.home / "report.json").write_text(json.dumps(report, indent=2, default=str))
    if args.json:
        print(json.dumps(report, indent=2, default=str))
        return 0
    noise = {k[: -len("_noise_sd")]: v for k, v in released.items() if k.endswith("_noise_sd")}
    shown = "  ".join(
        f"{k} {released[k]:.4f}" + (f" +- {noise[k]:.4f}" if k in noise else "")
        for k in ("mape", "mae_log", "coverage80")
        if k in released
    )
    print(f"trained {len(res.history)} rounds; released test metrics (noised): {shown}")
    for line in released.get("warnings", []):
        print(f"WARNING: {line}")
    print(f"model for valuations: {model_file} (fedmugrep appraise --model {model_file} ...)")
    print(f"report: {fed.home / 'report.json'} (the page: fedmugrep report {fed.home})")
    return 0
