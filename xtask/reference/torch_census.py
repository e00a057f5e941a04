"""PyTorch reference for the census-income benchmark of several architectures, for
`cargo xtask bench --torch xtask/reference/torch_census.py --torch-arch <arch>`.

The data preparation, optimiser, loss and loop are those of ../shared/reference/torch_mmoe_census.py
(protocol "census-mmoe"; embedding dim 4, Adam lr 1e-3, BCE-with-logits, equal weights); the
models are those of configs/census_<arch>.toml:
  mmoe          8 experts MLP[16] relu, a softmax gate per task, towers MLP[8] relu -> 1 logit
  shared_bottom bottom MLP[128] relu, towers MLP[8] relu -> 1 logit
  ple           2 CGC levels, 2 experts per task and 4 shared (MLP[16] relu each), task gates
                over own + shared experts, a shared gate over all (first level), towers MLP[8]
Prints throughput (train samples/s, pure training loop) and per-epoch AUCs, as the original.
"""
import argparse, gzip, time, json
import numpy as np
import torch
import torch.nn as nn
from sklearn.metrics import roc_auc_score

DENSE = [0, 5, 16, 17, 18, 30, 39]
DROP = {4, 7, 24, 41}


def read(path):
    op = gzip.open if path.endswith(".gz") else open
    with op(path, "rt") as f:
        return [line.rstrip("\n").split(", ") for line in f if line.strip()]


def prep(data_dir):
    tr = read(f"{data_dir}/census-income.data.gz")
    te = read(f"{data_dir}/census-income.test.gz")
    cat_cols = [c for c in range(42) if c not in DROP and c not in DENSE]
    vocabs = []
    for c in cat_cols:
        v = {}
        for r in tr:
            v.setdefault(r[c], len(v) + 1)
        vocabs.append(v)

    def enc(rows):
        xc = np.array([[vocabs[i].get(r[c], 0) for i, c in enumerate(cat_cols)] for r in rows], dtype=np.int64)
        xd = np.array([[float(r[c]) for c in DENSE] for r in rows], dtype=np.float32)
        y = np.array([[r[41].startswith("50000+"), r[7] == "Never married"] for r in rows], dtype=np.float32)
        return xc, xd, y

    trc, trd, try_ = enc(tr)
    lo, hi = trd.min(0), trd.max(0)
    sc = lambda d: np.clip((d - lo) / np.maximum(hi - lo, 1e-12), 0, 1).astype(np.float32)
    tec, ted, tey = enc(te)
    return (trc, sc(trd), try_), (tec[0::2], sc(ted[0::2]), tey[0::2]), (tec[1::2], sc(ted[1::2]), tey[1::2]), [len(v) + 1 for v in vocabs]


def mlp(d, h):
    return nn.Sequential(nn.Linear(d, h), nn.ReLU())


def tower(d, h=8):
    return nn.Sequential(nn.Linear(d, h), nn.ReLU(), nn.Linear(h, 1))


def mix(gate, x, experts):
    w = torch.softmax(gate(x), -1).unsqueeze(-1)  # B,E,1
    return (w * torch.stack(experts, 1)).sum(1)


class Inputs(nn.Module):
    def __init__(self, vocab_sizes, n_dense, emb=4):
        super().__init__()
        self.embs = nn.ModuleList(nn.Embedding(v, emb) for v in vocab_sizes)
        self.dim = emb * len(vocab_sizes) + n_dense

    def forward(self, xc, xd):
        return torch.cat([e(xc[:, i]) for i, e in enumerate(self.embs)] + [xd], 1)


class MMoE(nn.Module):
    def __init__(self, inputs, n_experts=8, expert=16, n_tasks=2):
        super().__init__()
        self.inputs, d = inputs, inputs.dim
        self.experts = nn.ModuleList(mlp(d, expert) for _ in range(n_experts))
        self.gates = nn.ModuleList(nn.Linear(d, n_experts) for _ in range(n_tasks))
        self.towers = nn.ModuleList(tower(expert) for _ in range(n_tasks))

    def forward(self, xc, xd):
        x = self.inputs(xc, xd)
        ex = [e(x) for e in self.experts]
        return torch.cat([t(mix(g, x, ex)) for g, t in zip(self.gates, self.towers)], 1)


class SharedBottom(nn.Module):
    def __init__(self, inputs, bottom=128, n_tasks=2):
        super().__init__()
        self.inputs, self.bottom = inputs, mlp(inputs.dim, bottom)
        self.towers = nn.ModuleList(tower(bottom) for _ in range(n_tasks))

    def forward(self, xc, xd):
        h = self.bottom(self.inputs(xc, xd))
        return torch.cat([t(h) for t in self.towers], 1)


class PLE(nn.Module):
    def __init__(self, inputs, levels=2, own=2, shared=4, expert=16, n_tasks=2):
        super().__init__()
        self.inputs, self.n_tasks = inputs, n_tasks
        self.levels = nn.ModuleList()
        d = inputs.dim
        for level in range(levels):
            last = level == levels - 1
            m = nn.Module()
            m.own = nn.ModuleList(nn.ModuleList(mlp(d, expert) for _ in range(own)) for _ in range(n_tasks))
            m.shared = nn.ModuleList(mlp(d, expert) for _ in range(shared))
            m.gates = nn.ModuleList(nn.Linear(d, own + shared) for _ in range(n_tasks))
            m.shared_gate = None if last else nn.Linear(d, n_tasks * own + shared)
            self.levels.append(m)
            d = expert
        self.towers = nn.ModuleList(tower(expert) for _ in range(n_tasks))

    def forward(self, xc, xd):
        x = self.inputs(xc, xd)
        task_in, shared_in = [x] * self.n_tasks, x
        for m in self.levels:
            own = [[e(task_in[t]) for e in m.own[t]] for t in range(self.n_tasks)]
            shared = [e(shared_in) for e in m.shared]
            nxt = [mix(m.gates[t], task_in[t], own[t] + shared) for t in range(self.n_tasks)]
            if m.shared_gate is not None:
                shared_in = mix(m.shared_gate, shared_in, [e for o in own for e in o] + shared)
            task_in = nxt
        return torch.cat([t(h) for t, h in zip(self.towers, task_in)], 1)


ARCHS = {"mmoe": MMoE, "shared_bottom": SharedBottom, "ple": PLE}


def evaluate(m, split, bs=8192):
    m.eval(); ps = []
    with torch.no_grad():
        for i in range(0, len(split[2]), bs):
            ps.append(torch.sigmoid(m(torch.from_numpy(split[0][i:i + bs]), torch.from_numpy(split[1][i:i + bs]))).numpy())
    p = np.concatenate(ps); m.train()
    return [roc_auc_score(split[2][:, t], p[:, t]) for t in range(split[2].shape[1])]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", required=True)
    ap.add_argument("--arch", choices=sorted(ARCHS), default="mmoe")
    ap.add_argument("--epochs", type=int, default=5)
    ap.add_argument("--batch", type=int, default=1024)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--max-batches", type=int, default=0, help="stop each epoch after N batches (throughput only)")
    a = ap.parse_args()
    torch.set_num_threads(a.threads); torch.manual_seed(a.seed); np.random.seed(a.seed)
    t0 = time.time(); tr, va, te, vs = prep(a.data); t_prep = time.time() - t0
    m = ARCHS[a.arch](Inputs(vs, tr[1].shape[1])); opt = torch.optim.Adam(m.parameters(), lr=1e-3)
    lossf = nn.BCEWithLogitsLoss()
    xc, xd, y = map(torch.from_numpy, tr)
    n = len(y); best = None; train_s = 0.0; seen = 0
    for ep in range(a.epochs):
        perm = torch.randperm(n); t1 = time.time(); nb = 0
        for i in range(0, n, a.batch):
            idx = perm[i:i + a.batch]
            out = m(xc[idx], xd[idx])
            loss = lossf(out[:, 0], y[idx, 0]) + lossf(out[:, 1], y[idx, 1])
            opt.zero_grad(set_to_none=True); loss.backward(); opt.step()
            seen += len(idx); nb += 1
            if a.max_batches and nb >= a.max_batches: break
        train_s += time.time() - t1
        v = evaluate(m, va)
        if best is None or v[0] > best[0][0]:
            best = (v, evaluate(m, te), ep)
        print(json.dumps({"epoch": ep, "valid_auc": v, "train_samples_per_s": round(seen / train_s)}), flush=True)
    print(json.dumps({"prep_s": round(t_prep, 2), "train_samples_per_s": round(seen / train_s),
                      "best_epoch": best[2], "valid_auc": best[0], "test_auc": best[1]}))


if __name__ == "__main__":
    main()
