#!/usr/bin/env python3
"""Logs mtrec run folders to MLflow for `cargo xtask mlflow` (xtask/src/mlflow.rs), with MLflow's
own client, so every tracking URI, authentication and artifact store MLflow supports works.

Reads one JSON request on stdin:

    {"tracking_uri": URI, "runs": [{"run_dir", "experiment", "name", "start_ms", "end_ms",
      "finished", "params": [[key, value]], "tags": {key: value},
      "metrics": [[key, value, timestamp_ms, step]], "artifacts": [path]}]}

and writes one JSON line per run on stdout: {"run_dir", "action", "experiment_id", "run_id"}, where
action is "logged", "replaced" (an earlier MLflow run of the same folder, with other records, was
deleted) or "unchanged" (the same folder with the same fingerprint is already there). Metric values
that are not finite come as the strings "nan", "inf", "-inf".
"""

import hashlib
import json
import os
import sys

# MLflow retries a failed request 7 times with a doubling backoff (minutes, for a server that is not
# there); a few tries unless the user set their own
os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "3")

from mlflow.entities import Metric, Param  # noqa: E402 (after the setting above)
from mlflow.tracking import MlflowClient  # noqa: E402

PARAMS_PER_BATCH = 100  # MLflow's limits per log_batch request
METRICS_PER_BATCH = 1000


def experiment_id(client, name):
    experiment = client.get_experiment_by_name(name)
    if experiment is None:
        return client.create_experiment(name)
    if experiment.lifecycle_stage == "deleted":
        client.restore_experiment(experiment.experiment_id)
    return experiment.experiment_id


def log_run(client, run):
    exp = experiment_id(client, run["experiment"])
    # the folder's key: a hash, so that no path needs quoting in a filter
    key = hashlib.sha256(run["run_dir"].encode()).hexdigest()[:32]
    earlier = client.search_runs([exp], filter_string=f"tags.`mtrec.run_key` = '{key}'")
    fingerprint = run["tags"]["mtrec.fingerprint"]
    for old in earlier:
        if old.data.tags.get("mtrec.fingerprint") == fingerprint:
            return {"run_dir": run["run_dir"], "action": "unchanged", "experiment_id": exp, "run_id": old.info.run_id}
    for old in earlier:
        client.delete_run(old.info.run_id)
    tags = dict(run["tags"], **{"mtrec.run_key": key, "mlflow.source.name": "mtrec"})
    created = client.create_run(exp, start_time=run["start_ms"], tags=tags, run_name=run["name"])
    run_id = created.info.run_id
    params = [Param(k, v) for k, v in run["params"]]
    for i in range(0, len(params), PARAMS_PER_BATCH):
        client.log_batch(run_id, params=params[i : i + PARAMS_PER_BATCH])
    metrics = [Metric(k, float(v), int(ts), int(step)) for k, v, ts, step in run["metrics"]]
    for i in range(0, len(metrics), METRICS_PER_BATCH):
        client.log_batch(run_id, metrics=metrics[i : i + METRICS_PER_BATCH])
    for path in run["artifacts"]:
        client.log_artifact(run_id, path)
    if run["finished"]:
        client.set_terminated(run_id, status="FINISHED", end_time=run["end_ms"])
    action = "replaced" if earlier else "logged"
    return {"run_dir": run["run_dir"], "action": action, "experiment_id": exp, "run_id": run_id}


def main():
    # MLflow prints to stdout ("View run … at …"): the answers get stdout to themselves
    answers, sys.stdout = sys.stdout, sys.stderr
    request = json.load(sys.stdin)
    client = MlflowClient(tracking_uri=request["tracking_uri"])
    for run in request["runs"]:
        print(json.dumps(log_run(client, run)), file=answers, flush=True)


if __name__ == "__main__":
    main()
