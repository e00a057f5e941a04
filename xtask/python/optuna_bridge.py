#!/usr/bin/env python3
"""Optuna's ask-and-tell interface for `cargo xtask tune --engine optuna`.

Started with one JSON argument (storage, study name, direction, sampler, pruner, seed, the
pruner's min resource and reduction factor, and the space); then reads one JSON request a line on
stdin and writes one JSON answer a line on stdout:

    {"op": "hello"}                                   -> {"optuna": version}
    {"op": "count"}                                   -> {"finished": complete + pruned trials}
    {"op": "ask"}                                     -> {"number": n, "params": {key: TOML text}, "resumed": bool}
    {"op": "report", "number": n, "step": e, "value": v[, "logged": true]} -> {"prune": bool}
    {"op": "tell", "number": n, "state": "complete|pruned|fail", "value": v} -> {}
    {"op": "close"}                                   -> {} and exits

Parameter values go back as TOML text (choices are the space file's TOML values). A trial left
RUNNING by a killed study is handed out again by the first asks ("resumed": true), under its own
number, with the intermediate values it reported: the xtask continues its run folder from its
checkpoint and reads the budgets its log holds.
"""

import json
import sys

import optuna


def sampler(name, seed):
    if name == "tpe":
        return optuna.samplers.TPESampler(seed=seed)
    if name == "cmaes":
        return optuna.samplers.CmaEsSampler(seed=seed)
    return optuna.samplers.RandomSampler(seed=seed)


def pruner(name, min_resource, eta):
    if name == "halving":
        return optuna.pruners.SuccessiveHalvingPruner(min_resource=min_resource, reduction_factor=eta)
    if name == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=0)
    return optuna.pruners.NopPruner()


def toml_text(p, value):
    if p["kind"] == "choice":
        return value  # already the TOML text of the choice
    if p["kind"] == "int":
        return str(int(value))
    return repr(float(value))


def distribution(p):
    if p["kind"] == "float":
        return optuna.distributions.FloatDistribution(p["low"], p["high"], log=p["log"])
    if p["kind"] == "int":
        return optuna.distributions.IntDistribution(p["low"], p["high"], log=p["log"])
    return optuna.distributions.CategoricalDistribution(p["choices"])


def main():
    setup = json.loads(sys.argv[1])
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(
        storage=setup["storage"],
        study_name=setup["study_name"],
        direction=setup["direction"],
        sampler=sampler(setup["sampler"], setup["seed"]),
        pruner=pruner(setup["pruner"], setup["min_resource"], setup["eta"]),
        load_if_exists=True,
    )
    # a resumed study's sampler must not draw the points of the first process again: its seed
    # moves on by the trials the storage holds
    existing = len(study.get_trials(deepcopy=False))
    if existing:
        study.sampler = sampler(setup["sampler"], setup["seed"] + existing)
    space = setup["space"]
    dists = {p["key"]: distribution(p) for p in space}
    # a killed study's running trials: handed out again first, under their own numbers
    pending = [t.number for t in study.get_trials(deepcopy=False, states=[optuna.trial.TrialState.RUNNING])]
    running = {}
    for line in sys.stdin:
        req = json.loads(line)
        op = req["op"]
        try:
            if op == "hello":
                out = {"optuna": optuna.__version__}
            elif op == "count":
                done = [optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED]
                out = {"finished": len(study.get_trials(deepcopy=False, states=done))}
            elif op == "ask":
                trial, params = None, None
                while pending and trial is None:
                    number = pending.pop(0)
                    trial_id = study._storage.get_trial_id_from_study_id_trial_number(study._study_id, number)
                    params = study._storage.get_trial(trial_id).params
                    if all(p["key"] in params for p in space):
                        trial = optuna.trial.Trial(study, trial_id)
                    else:  # killed while its point was being drawn
                        study.tell(number, state=optuna.trial.TrialState.FAIL)
                resumed = trial is not None
                if not resumed:
                    trial = study.ask(dists)
                    params = trial.params
                running[trial.number] = trial
                out = {
                    "number": trial.number,
                    "params": {p["key"]: toml_text(p, params[p["key"]]) for p in space},
                    "resumed": resumed,
                }
            elif op == "report":
                trial = running[req["number"]]
                if not req.get("logged"):  # a resumed trial's logged budgets were reported before
                    trial.report(req["value"], req["step"])
                out = {"prune": trial.should_prune()}
            elif op == "tell":
                state = {
                    "complete": optuna.trial.TrialState.COMPLETE,
                    "pruned": optuna.trial.TrialState.PRUNED,
                    "fail": optuna.trial.TrialState.FAIL,
                }[req["state"]]
                value = req.get("value") if state == optuna.trial.TrialState.COMPLETE else None
                study.tell(req["number"], value, state=state)
                running.pop(req["number"], None)
                out = {}
            elif op == "close":
                print("{}", flush=True)
                return
            else:
                out = {"error": f"unknown op {op}"}
        except Exception as e:  # the xtask shows it and stops
            out = {"error": f"{type(e).__name__}: {e}"}
        print(json.dumps(out), flush=True)


if __name__ == "__main__":
    main()
