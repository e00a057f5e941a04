#!/usr/bin/env python3
"""Reads an MLflow experiment back for xtask's MLflow test (xtask/src/mlflow.rs): prints one JSON
object, {"runs": [{"name", "status", "params": {k: v}, "tags": {k: v},
"metrics": {key: [[step, value, timestamp]]}, "artifacts": [path]}]}, active runs only, with every
metric's whole history (MLflow's REST API through its client).

Usage: python read_mlflow.py TRACKING_URI EXPERIMENT_NAME
"""

import json
import math
import sys

from mlflow.tracking import MlflowClient


def main():
    uri, name = sys.argv[1], sys.argv[2]
    client = MlflowClient(tracking_uri=uri)
    experiment = client.get_experiment_by_name(name)
    runs = []
    for run in client.search_runs([experiment.experiment_id]):
        metrics = {}
        for key in run.data.metrics:
            history = client.get_metric_history(run.info.run_id, key)
            metrics[key] = sorted(
                [m.step, m.value if math.isfinite(m.value) else str(m.value), m.timestamp] for m in history
            )
        runs.append(
            {
                "name": run.info.run_name,
                "status": run.info.status,
                "params": run.data.params,
                "tags": run.data.tags,
                "metrics": metrics,
                "artifacts": sorted(a.path for a in client.list_artifacts(run.info.run_id)),
            }
        )
    print(json.dumps({"runs": runs}))


if __name__ == "__main__":
    main()
