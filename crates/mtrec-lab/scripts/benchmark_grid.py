#!/usr/bin/env python3
"""The benchmark grid of README: every architecture x {fixed, uncertainty, three balancers} on one data set.

Writes one config per (architecture, method) from the shipped configs (only `name`, `model.architecture`,
`balance.method` and, where an architecture needs them, its own keys change), runs them all with
`cargo xtask compare --reuse` (so an interrupted grid goes on where it stopped) next to the single-task
baseline, and renders `grid.md`: Δm against single-task (architecture x method) and every task metric
(mean ± std over seeds) from `compare.json`.

    python3 crates/mtrec-lab/scripts/benchmark_grid.py --dataset census \
        --data-dir ../shared/data/census-income --out runs/grid/census

Standard library only. The methods default to the three best balancers by validation Δm against fixed
weights over the two sample-space comparisons of README (aligned_mtl, db_mtl, cagrad).
"""

import argparse
import json
import os
import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[3]

# Per data set: the config each architecture starts from, and the architectures of the grid. ESMM and AITM
# need a funnel of binary tasks: on census they change task 2 (`data.cascade`), so they have no Δm there, and
# wcr-mtl has a regression task, so they are left out of both.
DATASETS = {
    "census": {
        "base": lambda arch: f"census_{arch}.toml",
        "architectures": ["shared_bottom", "mmoe", "omoe", "ple", "cross_stitch", "adatt", "stem", "home"],
    },
    "wcr": {
        "base": lambda arch: "wcr_mmoe_text.toml",
        "architectures": ["shared_bottom", "mmoe", "omoe", "ple", "cross_stitch", "adatt", "stem", "home"],
    },
    "ctr": {
        "base": lambda arch: "ctr_esmm.toml" if arch == "esmm" else "ctr_mmoe.toml",
        "architectures": [
            "shared_bottom", "mmoe", "omoe", "ple", "cross_stitch", "esmm", "aitm", "adatt", "stem", "home",
        ],
    },
}


def set_key(text: str, section: str, key: str, value: str) -> str:
    """`text` with `key = value` in `[section]` (replaced where present, else added after the header)."""
    lines = text.splitlines()
    start = next((i for i, l in enumerate(lines) if l.strip() == f"[{section}]"), None)
    if start is None:
        return text.rstrip("\n") + f"\n\n[{section}]\n{key} = {value}\n"
    end = next((i for i in range(start + 1, len(lines)) if lines[i].lstrip().startswith("[")), len(lines))
    for i in range(start + 1, end):
        if re.match(rf"\s*{re.escape(key)}\s*=", lines[i]):
            lines[i] = f"{key} = {value}"
            return "\n".join(lines) + "\n"
    lines.insert(start + 1, f"{key} = {value}")
    return "\n".join(lines) + "\n"


def set_top(text: str, key: str, value: str) -> str:
    return re.sub(rf"(?m)^{key}\s*=.*$", f"{key} = {value}", text, count=1)


def write_configs(dataset: str, methods: list[str], out: Path) -> list[Path]:
    spec = DATASETS[dataset]
    folder = out / "configs"
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for arch in ["single_task"] + spec["architectures"]:
        base = REPO / "configs" / spec["base"](arch)
        text = base.read_text()
        if base.name.startswith("ctr_") or base.name.startswith("wcr_"):
            text = set_key(text, "model", "architecture", f'"{arch}"')
        for method in ["fixed"] if arch == "single_task" else methods:
            name = f"{dataset}-{arch}-{method}"
            config = set_key(set_top(text, "name", f'"{name}"'), "balance", "method", f'"{method}"')
            path = folder / f"{name}.toml"
            path.write_text(config)
            paths.append(path)
    return paths


def render(out: Path, dataset: str, methods: list[str], architectures: list[str]) -> str:
    data = json.loads((out / "compare.json").read_text())
    by_name = {r["name"]: r for r in data["results"]}
    lines = [f"Seeds {', '.join(map(str, data['seeds']))}; test metrics of the model selected on validation.", ""]
    lines += ["Δm against single-task (%):", ""]
    lines += ["| architecture | " + " | ".join(methods) + " |", "|---|" + "---|" * len(methods)]
    for arch in architectures:
        row = []
        for method in methods:
            r = by_name.get(f"{dataset}-{arch}-{method}")
            row.append("–" if r is None or r["delta_m"] is None else f"{100 * r['delta_m']:+.2f}")
        lines.append(f"| {arch} | " + " | ".join(row) + " |")
    lines += ["", "Every task metric (mean ± std over seeds):", ""]
    tasks = []
    for r in data["results"]:
        for t, (metric, _) in r["tasks"].items():
            if (t, metric) not in tasks:
                tasks.append((t, metric))
        for t, metric, _ in r["extra"]:
            if (t, metric) not in tasks:
                tasks.append((t, metric))
    lines += ["| config | " + " | ".join(f"{t} {m}" for t, m in tasks) + " | Δm |", "|---|" + "---|" * (len(tasks) + 1)]
    for r in data["results"]:
        values = {(t, m): v for t, (m, v) in r["tasks"].items()}
        values.update({(t, m): v for t, m, v in r["extra"]})
        row = []
        for key in tasks:
            v = values.get(key)
            if not v:
                row.append("–")
                continue
            mean = sum(v) / len(v)
            std = (sum((x - mean) ** 2 for x in v) / (len(v) - 1)) ** 0.5 if len(v) > 1 else 0.0
            row.append(f"{mean:.4f} ± {std:.4f}")
        dm = "–" if r["delta_m"] is None else f"{100 * r['delta_m']:+.2f} %"
        lines.append(f"| {r['name']} | " + " | ".join(row) + f" | {dm} |")
    return "\n".join(lines) + "\n"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--dataset", choices=sorted(DATASETS), required=True)
    p.add_argument("--data-dir", required=True)
    p.add_argument("--out", required=True, help="output folder: configs/, one folder a config, compare.*, grid.md")
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--methods", default="fixed,uncertainty,aligned_mtl,db_mtl,cagrad")
    p.add_argument("--architectures", help="a subset of the data set's architectures, comma-separated")
    p.add_argument("--xtask", default=str(REPO / "target" / "debug" / "xtask"), help="a built xtask binary")
    p.add_argument("--render-only", action="store_true", help="only write grid.md from compare.json")
    args = p.parse_args()
    methods = args.methods.split(",")
    out = Path(args.out).resolve()
    spec = DATASETS[args.dataset]
    architectures = args.architectures.split(",") if args.architectures else spec["architectures"]
    unknown = [a for a in architectures if a not in spec["architectures"]]
    if unknown:
        sys.exit(f"error: --architectures: {', '.join(unknown)} not in the {args.dataset} grid")
    paths = write_configs(args.dataset, methods, out)
    keep = {f"{args.dataset}-{a}-{m}" for a in architectures for m in methods} | {f"{args.dataset}-single_task-fixed"}
    paths = [p for p in paths if p.stem in keep]
    if not args.render_only:
        cmd = [args.xtask, "compare", "--configs", ",".join(map(str, paths)), "--seeds", str(args.seeds),
               "--data-dir", args.data_dir, "--out", str(out), "--reuse"]
        print(" ".join(cmd), flush=True)
        rc = subprocess.run(cmd, env=os.environ).returncode
        if rc != 0:
            return rc
    grid = render(out, args.dataset, methods, architectures)
    (out / "grid.md").write_text(grid)
    print(grid)
    return 0


if __name__ == "__main__":
    sys.exit(main())
