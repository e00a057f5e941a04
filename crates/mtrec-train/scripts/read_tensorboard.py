#!/usr/bin/env python3
"""Reads a run folder's TensorBoard event files with TensorBoard's own reader and prints every scalar
as JSON: {tag: [[step, value], ...]}. Used by `tests/tensorboard_python.rs` to check that what mtrec
writes is what TensorBoard shows.

    python read_tensorboard.py RUN_DIR
"""

import json
import sys

from tensorboard.backend.event_processing import event_accumulator


def main() -> None:
    acc = event_accumulator.EventAccumulator(sys.argv[1], size_guidance={event_accumulator.SCALARS: 0})
    acc.Reload()
    out = {tag: [[e.step, e.value] for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}
    json.dump(out, sys.stdout)


if __name__ == "__main__":
    main()
