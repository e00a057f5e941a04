"""Reference values for `lazy_adam` (crates/mtrec-train/src/sparse_optimizer.rs): PyTorch's
torch.optim.SparseAdam on the hand-made table of the test `lazy_adam_follows_sparse_adam`.

A table of 5 rows × 2 (start values 0.1·k − 0.3 for k = 0..9), three steps with sparse gradients:
rows 1 and 3, then rows 3 and 4, then row 1 (the values below); lr 0.01, betas (0.9, 0.999),
eps 1e-8. Prints the table after each step, to paste into the test.

    python3 -m pip install torch
    python3 crates/mtrec-train/reference/sparse_adam.py
"""

import torch

torch.set_printoptions(precision=10)
start = torch.tensor([0.1 * k - 0.3 for k in range(10)], dtype=torch.float32).reshape(5, 2)
table = torch.nn.Parameter(start.clone())
opt = torch.optim.SparseAdam([table], lr=0.01, betas=(0.9, 0.999), eps=1e-8)
steps = [
    ([1, 3], [[0.5, -1.0], [2.0, 0.25]]),
    ([3, 4], [[-0.75, 1.5], [0.1, -0.2]]),
    ([1], [[0.3, 0.6]]),
]
for ids, grad in steps:
    opt.zero_grad()
    table.grad = torch.sparse_coo_tensor(
        torch.tensor([ids]), torch.tensor(grad, dtype=torch.float32), size=(5, 2)
    )
    opt.step()
    print("[" + ", ".join(f"{v:.9e}" for v in table.detach().reshape(-1).tolist()) + "],")
