"""The census dense-field encodings in the PyTorch reference: min-max (the protocol), 32 quantile buckets embedded
beside the min-max value (what `data.dense_buckets = 32` does in mtrec), log1p before min-max, or both.

`torch_mmoe_census.py`'s model and training (../shared/reference: MMoE, 8 experts of 16, Adam 1e-3, batch 1024, one
thread), the epoch with the best mean validation AUC evaluated on test. Run:
`python crates/mtrec-lab/scripts/census_dense_buckets_torch.py buckets --seed 42 --epochs 15`.
"""
import argparse
import json
import sys

import numpy as np
import torch
import torch.nn as nn

p = argparse.ArgumentParser()
p.add_argument('variant', choices=['minmax', 'buckets', 'log', 'log_buckets'])
p.add_argument('--seed', type=int, default=42)
p.add_argument('--epochs', type=int, default=15)
p.add_argument('--reference', default='../shared/reference')
p.add_argument('--data', default='../shared/data/census-income')
args = p.parse_args()
variant, seed, epochs = args.variant, args.seed, args.epochs
sys.path.insert(0, args.reference)
import torch_mmoe_census as R  # noqa: E402
torch.set_num_threads(1); torch.manual_seed(seed); np.random.seed(seed)
D = args.data
tr = R.read(f"{D}/census-income.data.gz"); te = R.read(f"{D}/census-income.test.gz")
cat_cols = [c for c in range(42) if c not in R.DROP and c not in R.DENSE]
vocabs = []
for c in cat_cols:
    v = {}
    for r in tr: v.setdefault(r[c], len(v) + 1)
    vocabs.append(v)
def enc(rows):
    xc = np.array([[vocabs[i].get(r[c], 0) for i, c in enumerate(cat_cols)] for r in rows], dtype=np.int64)
    xd = np.array([[float(r[c]) for c in R.DENSE] for r in rows], dtype=np.float64)
    y = np.array([[r[41].startswith("50000+"), r[7] == "Never married"] for r in rows], dtype=np.float32)
    return xc, xd, y
trc, trd, try_ = enc(tr); tec, ted, tey = enc(te)
def scale(d, ref):
    lo, hi = ref.min(0), ref.max(0)
    return np.clip((d - lo) / np.maximum(hi - lo, 1e-12), 0, 1).astype(np.float32)
if variant in ('log', 'log_buckets'):
    f = lambda d: np.log1p(np.maximum(d, 0))
    trs, tes = scale(f(trd), f(trd)), scale(f(ted), f(trd))
else:
    trs, tes = scale(trd, trd), scale(ted, trd)
vs = [len(v) + 1 for v in vocabs]
if variant in ('buckets', 'log_buckets'):
    extra_tr, extra_te = [], []
    for j in range(trd.shape[1]):
        qs = np.unique(np.quantile(trd[:, j], np.linspace(0, 1, 33)[1:-1]))
        extra_tr.append(np.searchsorted(qs, trd[:, j], side='right') + 1)
        extra_te.append(np.searchsorted(qs, ted[:, j], side='right') + 1)
        vs.append(len(qs) + 2)
    trc = np.concatenate([trc, np.stack(extra_tr, 1)], 1); tec = np.concatenate([tec, np.stack(extra_te, 1)], 1)
tr_ = (trc, trs, try_); va = (tec[0::2], tes[0::2], tey[0::2]); tst = (tec[1::2], tes[1::2], tey[1::2])
m = R.MMoE(vs, trs.shape[1]); opt = torch.optim.Adam(m.parameters(), lr=1e-3)
lossf = nn.BCEWithLogitsLoss(); xc, xd, y = map(torch.from_numpy, tr_); n = len(y); best = None
for ep in range(epochs):
    perm = torch.randperm(n)
    for i in range(0, n, 1024):
        idx = perm[i:i+1024]; out = m(xc[idx], xd[idx])
        loss = lossf(out[:, 0], y[idx, 0]) + lossf(out[:, 1], y[idx, 1])
        opt.zero_grad(); loss.backward(); opt.step()
    v = R.evaluate(m, va)
    if best is None or np.mean(v) > np.mean(best[0]): best = (v, R.evaluate(m, tst), ep)
print(json.dumps({"variant": variant, "seed": seed, "best_epoch": best[2], "valid": [round(x,4) for x in best[0]], "test": [round(x,4) for x in best[1]]}), flush=True)
