"""A gradient-boosted-trees reference on the census-mmoe protocol: how high each task's test AUC can go on these inputs.

Same inputs and splits as `torch_mmoe_census.py` (../shared/reference; every field but education, marital status, the
instance weight and the label; validation = even rows of the test file, test = odd rows), scikit-learn's
HistGradientBoostingClassifier with the categorical fields as categories, one model a task, two settings, the one
with the better validation AUC reported. Run: `python crates/mtrec-lab/scripts/census_gbdt_ceiling.py` with
numpy, torch and scikit-learn installed and `--reference DIR --data DIR` (defaults: ../shared/reference,
../shared/data/census-income).
"""
import argparse
import sys, json
import numpy as np
p = argparse.ArgumentParser()
p.add_argument('--reference', default='../shared/reference')
p.add_argument('--data', default='../shared/data/census-income')
args = p.parse_args()
sys.path.insert(0, args.reference)
import torch_mmoe_census as R  # noqa: E402
from sklearn.ensemble import HistGradientBoostingClassifier  # noqa: E402
from sklearn.metrics import roc_auc_score  # noqa: E402
D = args.data
tr = R.read(f"{D}/census-income.data.gz"); te = R.read(f"{D}/census-income.test.gz")
cols = [c for c in range(42) if c not in R.DROP]
cat = [c not in R.DENSE for c in cols]
vocab = {c: {} for c in cols if c not in R.DENSE}
def enc(rows):
    X = np.zeros((len(rows), len(cols)))
    for i, r in enumerate(rows):
        for j, c in enumerate(cols):
            X[i, j] = float(r[c]) if c in R.DENSE else vocab[c].setdefault(r[c], len(vocab[c]))
    y = np.array([[r[41].startswith("50000+"), r[7] == "Never married"] for r in rows], dtype=int)
    return X, y
Xtr, ytr = enc(tr); Xte, yte = enc(te)
va, ts = slice(0, None, 2), slice(1, None, 2)
for t, name in enumerate(["income", "never_married"]):
    best = None
    for lr, leaves in [(0.1, 31), (0.05, 63)]:
        m = HistGradientBoostingClassifier(learning_rate=lr, max_leaf_nodes=leaves, max_iter=1000, categorical_features=np.array(cat), early_stopping=True, validation_fraction=0.1, random_state=0)
        m.fit(Xtr, ytr[:, t])
        v = roc_auc_score(yte[va, t], m.predict_proba(Xte[va])[:, 1]); s = roc_auc_score(yte[ts, t], m.predict_proba(Xte[ts])[:, 1])
        if best is None or v > best[0]: best = (v, s, lr, leaves)
    print(json.dumps({"task": name, "valid": round(best[0], 4), "test": round(best[1], 4), "lr": best[2], "leaves": best[3]}), flush=True)
