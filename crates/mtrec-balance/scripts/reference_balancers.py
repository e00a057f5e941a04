"""Reference values for mtrec's gradient balancers from LibMTL and TorchJD, the implementations the papers point to.

Writes `crates/mtrec-balance/reference/balancers.json`, read by each balancer's `matches_the_reference_implementations`
test. Every case is a fixed Jacobian `J` (one task gradient a row) and the task losses; the script builds a model
whose shared parameter `θ` (at 0) has exactly these gradients — task `t`'s loss is `ℓ_t(θ) = ⟨J_t, θ⟩ + ℓ_t` — and
runs the library's own code on it: LibMTL's weighting classes through their real `backward` (the update is what
they leave in `θ.grad`), TorchJD's aggregators on `J`. Stateful methods (DB-MTL, GradVac, FAMO) take several steps
with the same `J`; each step's update is recorded.

Run (Python with torch, torchjd, scipy, cvxpy, ecos, qpsolvers and quadprog, all from PyPI; LibMTL from its
GitHub repository, whose PyPI release predates these methods):

    python crates/mtrec-balance/scripts/reference_balancers.py --libmtl PATH/TO/LibMTL \
        [--libmtl-commit SHA] [--out crates/mtrec-balance/reference/balancers.json]

`PATH/TO/LibMTL` is a checkout (the folder holding `LibMTL/weighting/`). Randomised orders (PCGrad, GradVac) are
made irrelevant by using two tasks there: each task has one other task to visit.
"""

import argparse
import importlib
import json
import subprocess
import sys
import types
from importlib import metadata
from pathlib import Path

import numpy as np
import torch

torch.set_default_dtype(torch.float64)


def cases() -> list[dict]:
    """The Jacobians and losses: hand-made conflicts and seeded Gaussian ones of 2–4 tasks."""
    rng = np.random.default_rng(20261207)
    out = [
        {"name": "conflict2", "jacobian": [[1.0, 0.0, 0.5, -0.2, 0.1], [-0.8, 1.2, -0.1, 0.3, 0.0]],
         "losses": [0.7, 0.3]},
        {"name": "agree2", "jacobian": [[1.0, 0.4, 0.0, 0.2], [0.5, 1.0, 0.3, -0.1]], "losses": [1.2, 0.05]},
        {"name": "scaled2", "jacobian": [[30.0, -4.0, 2.0], [-0.1, 0.2, 0.05]], "losses": [2.5, 0.4]},
    ]
    for t, n in [(3, 6), (4, 8)]:
        j = rng.normal(size=(t, n))
        j[-1] = -0.6 * j[0] + 0.5 * rng.normal(size=n)  # the last task conflicts with the first
        out.append({"name": f"gauss{t}", "jacobian": j.round(6).tolist(),
                    "losses": rng.uniform(0.1, 2.0, size=t).round(6).tolist()})
    return out


def load_libmtl(root: Path):
    """LibMTL's weighting modules, without running the package's `__init__` (which imports its trainer)."""
    for name, path in [("LibMTL", root / "LibMTL"), ("LibMTL.weighting", root / "LibMTL" / "weighting")]:
        module = types.ModuleType(name)
        module.__path__ = [str(path)]
        sys.modules[name] = module
    # torch.symeig is gone from torch (a stub that raises); Aligned_MTL still calls it
    torch.symeig = lambda m, eigenvectors=True: torch.linalg.eigh(m)
    return lambda cls: getattr(importlib.import_module(f"LibMTL.weighting.{cls}"), cls)


def libmtl_run(cls, case: dict, steps: list[dict], kwargs: dict, after=None) -> list[list[float]]:
    """Runs LibMTL's `cls.backward` on the linear model of `case` for each step; the updates left in `θ.grad`."""
    jac = torch.tensor(case["jacobian"])
    t, n = jac.shape

    class Harness(cls):
        def __init__(self):
            super().__init__()
            self.theta = torch.nn.Parameter(torch.zeros(n))
            self.task_num, self.device, self.rep_grad = t, torch.device("cpu"), False
            self.task_name = [f"t{i}" for i in range(t)]

        def get_share_params(self):
            return [self.theta]

        def zero_grad_share_params(self):  # LibMTL's trainer: encoder.zero_grad(set_to_none=False)
            if self.theta.grad is not None:
                self.theta.grad.zero_()

    w = Harness()
    w.init_param()
    updates = []
    for step in steps:
        w.theta.grad = torch.zeros(n)
        losses = jac @ w.theta + torch.tensor(step["losses"])
        w.backward(losses, **kwargs)
        updates.append(w.theta.grad.tolist())
        if after is not None:
            after(w, step)
    return updates


def torchjd_run(aggregator, case: dict, steps: int) -> list[list[float]]:
    jac = torch.tensor(case["jacobian"])
    return [aggregator(jac).tolist() for _ in range(steps)]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--libmtl", required=True, type=Path, help="a LibMTL checkout (holds LibMTL/weighting/)")
    p.add_argument("--libmtl-commit", help="its commit, where the folder is not a git work tree")
    p.add_argument("--out", type=Path, default=Path(__file__).resolve().parents[1] / "reference" / "balancers.json")
    args = p.parse_args()
    commit = args.libmtl_commit or subprocess.run(
        ["git", "-C", str(args.libmtl), "rev-parse", "HEAD"], capture_output=True, text=True, check=True
    ).stdout.strip()
    libmtl = load_libmtl(args.libmtl)
    import torchjd.aggregation as jd

    libmtl_name = f"LibMTL {commit[:12]}"
    torchjd_name = f"TorchJD {metadata.version('torchjd')}"
    records = []

    def record(method, library, case, options, steps, updates):
        records.append({
            "method": method, "library": library, "case": case["name"], "options": options,
            "jacobian": case["jacobian"],
            "steps": [dict(s, update=u) for s, u in zip(steps, updates)],
        })

    all_cases = cases()
    two_task = [c for c in all_cases if len(c["jacobian"]) == 2]
    for case in all_cases:
        one = [{"losses": case["losses"]}]
        t = len(case["jacobian"])
        # stateless combinations, one step
        record("upgrad", libmtl_name, case, {"pref": "mean"}, one,
               libmtl_run(libmtl("UPGrad"), case, one, {"UPGrad_norm_eps": 1e-4, "UPGrad_reg_eps": 1e-4}))
        record("upgrad", torchjd_name, case, {"pref": "ones"}, one,
               torchjd_run(jd.UPGrad(pref_vector=torch.ones(t)), case, 1))
        record("aligned_mtl", libmtl_name, case, {}, one, libmtl_run(libmtl("Aligned_MTL"), case, one, {}))
        record("aligned_mtl", torchjd_name, case, {"pref": "ones"}, one,
               torchjd_run(jd.AlignedMTL(pref_vector=torch.ones(t)), case, 1))
        record("imtl", libmtl_name, case, {}, one, libmtl_run(libmtl("IMTL"), case, one, {}))
        record("imtl", torchjd_name, case, {}, one, torchjd_run(jd.IMTLG(), case, 1))
        record("mgda", libmtl_name, case, {"normalization": "none"}, one,
               libmtl_run(libmtl("MGDA"), case, one, {"mgda_gn": "none"}))
        record("cagrad", libmtl_name, case, {"c": 0.5, "rescale": 1}, one,
               libmtl_run(libmtl("CAGrad"), case, one, {"calpha": 0.5, "rescale": 1}))
        for alpha in [1.0, 2.0]:
            record("fairgrad", libmtl_name, case, {"alpha": alpha}, one,
                   libmtl_run(libmtl("FairGrad"), case, one, {"FairGrad_alpha": alpha}))
            record("fairgrad", torchjd_name, case, {"alpha": alpha}, one,
                   torchjd_run(jd.FairGrad(alpha=alpha), case, 1))
        record("nash_mtl", libmtl_name, case, {"max_norm": 0.0}, one,
               libmtl_run(libmtl("Nash_MTL"), case, one,
                          {"update_weights_every": 1, "optim_niter": 20, "max_norm": 0.0}))
        # DB-MTL: three steps with the same gradients (its buffer averages them)
        three = [{"losses": case["losses"]}] * 3
        record("db_mtl", libmtl_name, case, {"beta": 0.9, "sigma": 0.5}, three,
               libmtl_run(libmtl("DB_MTL"), case, three, {"DB_beta": 0.9, "DB_beta_sigma": 0.5}))
        # FAMO: the losses before and after each step, the logits updated in between
        rng = np.random.default_rng(len(case["name"]))
        famo_steps, losses = [], np.array(case["losses"])
        for _ in range(3):
            after = losses * rng.uniform(0.7, 1.0, size=t)
            famo_steps.append({"losses": losses.round(6).tolist(), "losses_after": after.round(6).tolist()})
            losses = after.round(6)

        def famo_after(w, step):
            w.update_w(torch.tensor(step["losses_after"]))

        record("famo", libmtl_name, case, {"lr": 0.025, "gamma": 1e-3}, famo_steps,
               libmtl_run(libmtl("FAMO"), case, famo_steps, {"FAMO_w_lr": 0.025, "FAMO_w_gamma": 1e-3},
                          after=famo_after))
    for case in two_task:
        one = [{"losses": case["losses"]}]
        record("pcgrad", libmtl_name, case, {}, one, libmtl_run(libmtl("PCGrad"), case, one, {}))
        record("pcgrad", torchjd_name, case, {}, one, torchjd_run(jd.PCGrad(), case, 1))
        three = [{"losses": case["losses"]}] * 3
        record("gradvac", libmtl_name, case, {"beta": 0.5}, three,
               libmtl_run(libmtl("GradVac"), case, three, {"GradVac_beta": 0.5, "GradVac_group_type": 0}))
        record("gradvac", torchjd_name, case, {"beta": 0.5}, three,
               torchjd_run(jd.GradVac(beta=0.5), case, 3))
    out = {
        "generator": "crates/mtrec-balance/scripts/reference_balancers.py",
        "libraries": {"LibMTL": commit, "TorchJD": metadata.version("torchjd"), "torch": torch.__version__},
        "records": records,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=1) + "\n")
    print(f"{len(records)} records -> {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
