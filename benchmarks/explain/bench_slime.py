"""Stability of S-LIME vs LIME (the `lime` package): Jaccard@1..5 over repeated explanations.

Data sets: sklearn's breast cancer with a 500-tree random forest (instance 0, class
probabilities) and the MARS function 10 sin(pi x1 x2) + 20 (x3 - 0.05)^2 + 5.2 x4 + 5 x5 on
uniform [0, 1]^5 explained at (0.51, 0.49, 0.5, 0.5, 0.5). LIME runs with the same starting
budget (num_samples = n_init), continuous features and lasso_path selection, a new seed per run.

    .venv/bin/python benchmarks/explain/bench_slime.py [--runs 20] [--quick]

Writes benchmarks/results/explain_slime.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import numpy as np
from threadpoolctl import threadpool_limits

from winnow.common.progress import track_progress
from winnow.common.runs import atomic_write_text
from winnow.explain.slime import StableLimeExplainer, mean_pairwise_jaccard

RESULTS = Path(__file__).resolve().parents[1] / "results" / "explain_slime.json"
KS = (1, 2, 3, 4, 5)


def mars(x: np.ndarray) -> np.ndarray:
    return (
        10 * np.sin(np.pi * x[:, 0] * x[:, 1])
        + 20 * (x[:, 2] - 0.05) ** 2
        + 5.2 * x[:, 3]
        + 5 * x[:, 4]
    )


def problems(seed: int = 0) -> dict:
    from sklearn.datasets import load_breast_cancer
    from sklearn.ensemble import RandomForestClassifier

    data, target = load_breast_cancer(return_X_y=True)
    forest = RandomForestClassifier(n_estimators=500, random_state=seed, n_jobs=1)
    forest.fit(data, target)
    uniform = np.random.default_rng(seed).uniform(size=(1000, 5))
    return {
        "breast_cancer_rf": dict(
            train=data, row=data[0], predict=forest.predict_proba, mode="classification"
        ),
        "mars": dict(
            train=uniform,
            row=np.array([0.51, 0.49, 0.5, 0.5, 0.5]),
            predict=mars,
            mode="regression",
        ),
    }


def run_lime(problem: dict, seed: int, n_samples: int) -> tuple[list[int], int, float]:
    from lime.lime_tabular import LimeTabularExplainer

    explainer = LimeTabularExplainer(
        problem["train"],
        mode=problem["mode"],
        discretize_continuous=False,
        feature_selection="lasso_path",
        random_state=seed,
    )
    calls = 0

    def counted(x):
        nonlocal calls
        calls += len(x)
        return problem["predict"](x)

    label = 1 if problem["mode"] == "classification" else None
    started = time.perf_counter()
    kwargs = {"labels": (label,)} if label is not None else {}
    explanation = explainer.explain_instance(
        problem["row"], counted, num_features=5, num_samples=n_samples, **kwargs
    )
    seconds = time.perf_counter() - started
    ranked = [feature for feature, _ in explanation.as_map()[label if label is not None else 1]]
    return ranked, calls, seconds


def run_slime(
    problem: dict, seed: int, n_init: int, n_max: int
) -> tuple[list[int], int, float, bool]:
    explainer = StableLimeExplainer(
        problem["train"], mode=problem["mode"], n_init=n_init, n_max=n_max, num_features=5
    )
    label = 1 if problem["mode"] == "classification" else None
    started = time.perf_counter()
    result = explainer.explain_instance(problem["row"], problem["predict"], label, seed)
    seconds = time.perf_counter() - started
    return list(result.ranked_features), result.n_samples, seconds, result.converged


def measure(name: str, problem: dict, runs: int, n_init: int, n_max: int) -> dict:
    lime_rows, slime_rows = [], []
    with track_progress(name, total=runs) as bar:
        for seed in range(runs):
            lime_rows.append(run_lime(problem, seed, n_init))
            slime_rows.append(run_slime(problem, seed, n_init, n_max))
            bar.advance(1)
    return {
        "lime": {
            "jaccard": [mean_pairwise_jaccard([r[0] for r in lime_rows], k) for k in KS],
            "mean_model_calls": float(np.mean([r[1] for r in lime_rows])),
            "mean_seconds": float(np.mean([r[2] for r in lime_rows])),
        },
        "slime": {
            "jaccard": [mean_pairwise_jaccard([r[0] for r in slime_rows], k) for k in KS],
            "mean_model_calls": float(np.mean([r[1] for r in slime_rows])),
            "mean_seconds": float(np.mean([r[2] for r in slime_rows])),
            "converged_share": float(np.mean([r[3] for r in slime_rows])),
        },
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--n-init", type=int, default=1000)
    parser.add_argument("--n-max", type=int, default=10_000)
    parser.add_argument("--quick", action="store_true", help="3 runs, for a smoke test")
    args = parser.parse_args()
    runs = 3 if args.quick else args.runs
    with threadpool_limits(1):
        results = {
            name: measure(name, problem, runs, args.n_init, args.n_max)
            for name, problem in problems().items()
        }
    summary = {
        name: {
            "jaccard_at_k_lime": res["lime"]["jaccard"],
            "jaccard_at_k_slime": res["slime"]["jaccard"],
            "mean_model_calls_lime": res["lime"]["mean_model_calls"],
            "mean_model_calls_slime": res["slime"]["mean_model_calls"],
            "model_call_ratio": res["slime"]["mean_model_calls"] / res["lime"]["mean_model_calls"],
            "slime_converged_share": res["slime"]["converged_share"],
        }
        for name, res in results.items()
    }
    payload = {
        "benchmark": "explain_slime",
        "machine": {"platform": platform.platform(), "cores": os.cpu_count(), "threads": 1},
        "config": {"runs": runs, "n_init": args.n_init, "n_max": args.n_max, "ks": list(KS)},
        "results": results,
        "summary": summary,
    }
    atomic_write_text(RESULTS, json.dumps(payload, indent=2) + "\n")
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
