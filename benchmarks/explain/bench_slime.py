"""Stability of S-LIME vs LIME (the `lime` package), including arms at equal model calls.

S-LIME's default arm spends up to 10x LIME's model calls, so its stability gain mixes the test
with the extra samples. Arms, all with the same model, instance, kernel width (0.75 sqrt(p)),
five features and seeds 0..runs-1:

- ``lime``: the `lime` package, 1,000 samples (continuous features, lasso_path selection);
- ``lime_at_slime_calls``: the same at S-LIME's mean model calls, measured in this run;
- ``slime_equal_calls``: S-LIME with ``n_max`` = LIME's 1,000 calls (``n_init`` = 250, so the
  test can ask for two doublings);
- ``slime``: S-LIME's defaults (``n_init`` 1,000, ``n_max`` 10,000);
- ``lar_fixed``: control, winnow's sampler and LARS at a fixed 1,000 samples (``n_init`` =
  ``n_max``): what S-LIME returns at that size when no test may grow the sample.

Jaccard@k compares the top-k features by |weight| (lime's order) across runs. Data sets: breast
cancer (500-tree random forest, row 0, class 1), MARS 10 sin(pi x1 x2) + 20 (x3 - 0.05)^2 +
5.2 x4 + 5 x5 at (0.51, 0.49, 0.5, 0.5, 0.5), diabetes (500-tree random forest regressor,
row 0) and wine (500-tree random forest, three classes, row 0, its predicted class 0).

    OMP_NUM_THREADS=1 nice -n 19 .venv/bin/python benchmarks/explain/bench_slime.py [--runs 20]
    .venv/bin/python benchmarks/explain/bench_slime.py --quick   # 3 runs, writes to a temp dir

Writes benchmarks/results/explain_slime.json (``summary``: data set -> the LIME vs S-LIME keys,
plus ``equal_calls``: data set -> arm -> {"jaccard": [k=1..5], "mean_calls"} and
``equal_calls_goal``) and benchmarks/results/explain_slime.png.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
from threadpoolctl import threadpool_limits

from winnow.common.progress import track_progress
from winnow.common.runs import atomic_path, atomic_write_text
from winnow.explain.slime import StableLimeExplainer, mean_pairwise_jaccard

RESULTS = Path(__file__).resolve().parents[1] / "results"
KS = (1, 2, 3, 4, 5)
NUM_FEATURES = 5


def mars(x: np.ndarray) -> np.ndarray:
    return (
        10 * np.sin(np.pi * x[:, 0] * x[:, 1])
        + 20 * (x[:, 2] - 0.05) ** 2
        + 5.2 * x[:, 3]
        + 5 * x[:, 4]
    )


def problems(seed: int = 0) -> dict:
    """name -> training data, row, prediction function, mode and explained label."""
    from sklearn.datasets import load_breast_cancer, load_diabetes, load_wine
    from sklearn.ensemble import RandomForestClassifier, RandomForestRegressor

    def forest(kind, loader):
        data, target = loader(return_X_y=True)
        return data, kind(n_estimators=500, random_state=seed, n_jobs=1).fit(data, target)

    cancer, cancer_rf = forest(RandomForestClassifier, load_breast_cancer)
    diabetes, diabetes_rf = forest(RandomForestRegressor, load_diabetes)
    wine, wine_rf = forest(RandomForestClassifier, load_wine)
    uniform = np.random.default_rng(seed).uniform(size=(1000, 5))
    mars_row = np.array([0.51, 0.49, 0.5, 0.5, 0.5])
    wine_label = int(np.argmax(wine_rf.predict_proba(wine[:1])[0]))
    return {
        "breast_cancer_rf": dict(
            train=cancer, row=cancer[0], predict=cancer_rf.predict_proba, label=1
        ),
        "mars": dict(train=uniform, row=mars_row, predict=mars, label=None),
        "diabetes_rf": dict(
            train=diabetes, row=diabetes[0], predict=diabetes_rf.predict, label=None
        ),
        "wine_rf": dict(train=wine, row=wine[0], predict=wine_rf.predict_proba, label=wine_label),
    }


class CountedModel:
    """The black box with a count of the rows it was asked about (the cost both methods pay)."""

    def __init__(self, predict) -> None:
        self.predict, self.calls = predict, 0

    def __call__(self, rows):
        self.calls += len(rows)
        return self.predict(rows)


def run_lime(problem: dict, seed: int, n_samples: int) -> dict:
    from lime.lime_tabular import LimeTabularExplainer

    label = problem["label"]
    explainer = LimeTabularExplainer(
        problem["train"],
        mode="regression" if label is None else "classification",
        discretize_continuous=False,
        feature_selection="lasso_path",
        random_state=seed,
    )
    model = CountedModel(problem["predict"])
    started = time.perf_counter()
    explanation = explainer.explain_instance(
        problem["row"],
        model,
        labels=(0 if label is None else label,),
        num_features=NUM_FEATURES,
        num_samples=n_samples,
    )
    seconds = time.perf_counter() - started
    ranked = [feature for feature, _ in explanation.as_map()[1 if label is None else label]]
    return {"ranked": [int(j) for j in ranked], "calls": model.calls, "seconds": seconds}


def run_slime(problem: dict, seed: int, n_init: int, n_max: int) -> dict:
    label = problem["label"]
    explainer = StableLimeExplainer(
        problem["train"],
        mode="regression" if label is None else "classification",
        n_init=n_init,
        n_max=n_max,
        num_features=NUM_FEATURES,
    )
    model = CountedModel(problem["predict"])
    started = time.perf_counter()
    result = explainer.explain_instance(problem["row"], model, label, seed)
    seconds = time.perf_counter() - started
    assert model.calls == result.n_samples  # every row reaches the model once
    return {
        "ranked": list(result.ranked_features),
        "calls": model.calls,
        "seconds": seconds,
        "converged": result.converged,
        "rounds": result.rounds,
    }


def aggregate(rows: list[dict]) -> dict:
    out = {
        "jaccard": [mean_pairwise_jaccard([r["ranked"] for r in rows], k) for k in KS],
        "mean_calls": float(np.mean([r["calls"] for r in rows])),
        "mean_seconds": float(np.mean([r["seconds"] for r in rows])),
        "calls": [r["calls"] for r in rows],
    }
    if "converged" in rows[0]:
        out["converged_share"] = float(np.mean([r["converged"] for r in rows]))
    return out


def measure(name: str, problem: dict, runs: int, config: dict) -> dict:
    """Every arm on the same seeds; S-LIME's default arm first, to size LIME's matched arm."""
    lime_calls, n_init, n_max = config["lime_calls"], config["n_init"], config["n_max"]
    arms = {
        "slime": lambda s: run_slime(problem, s, n_init, n_max),
        "lime": lambda s: run_lime(problem, s, lime_calls),
        "slime_equal_calls": lambda s: run_slime(problem, s, config["equal_n_init"], lime_calls),
        "lar_fixed": lambda s: run_slime(problem, s, lime_calls, lime_calls),
    }
    results = {}
    with track_progress(name, total=runs * (len(arms) + 1)) as bar:
        for arm, run in arms.items():
            rows = []
            for seed in range(runs):
                rows.append(run(seed))
                bar.advance(1)
            results[arm] = aggregate(rows)
        matched = round(results["slime"]["mean_calls"])
        rows = []
        for seed in range(runs):
            rows.append(run_lime(problem, seed, matched))
            bar.advance(1)
        results["lime_at_slime_calls"] = aggregate(rows)
    return results


def summarise(results: dict) -> dict:
    summary = {
        name: {
            "jaccard_at_k_lime": res["lime"]["jaccard"],
            "jaccard_at_k_slime": res["slime"]["jaccard"],
            "mean_model_calls_lime": res["lime"]["mean_calls"],
            "mean_model_calls_slime": res["slime"]["mean_calls"],
            "model_call_ratio": res["slime"]["mean_calls"] / res["lime"]["mean_calls"],
            "slime_converged_share": res["slime"]["converged_share"],
        }
        for name, res in results.items()
    }
    summary["equal_calls"] = {
        name: {
            arm: {"jaccard": arms[arm]["jaccard"], "mean_calls": arms[arm]["mean_calls"]}
            for arm in ("lime", "lime_at_slime_calls", "slime_equal_calls", "slime", "lar_fixed")
        }
        for name, arms in results.items()
    }
    summary["equal_calls_goal"] = {
        name: {
            "slime_ge_lime_every_k": all(
                s >= lime - 1e-12
                for s, lime in zip(
                    arms["slime_equal_calls"]["jaccard"], arms["lime"]["jaccard"], strict=True
                )
            ),
            "slime_ge_0.95_at_k_le_3": all(
                j >= 0.95 for j in arms["slime_equal_calls"]["jaccard"][:3]
            ),
        }
        for name, arms in results.items()
    }
    return summary


def plot(results: dict):
    from matplotlib.figure import Figure

    styles = {  # the control is drawn small on top: it coincides with S-LIME at n_max 1,000
        "lime": ("LIME, 1,000", "tab:blue", "-", "o"),
        "lime_at_slime_calls": ("LIME at S-LIME's calls", "tab:blue", "--", "s"),
        "slime_equal_calls": ("S-LIME, n_max 1,000", "tab:red", "-", "o"),
        "slime": ("S-LIME default", "tab:red", "--", "s"),
        "lar_fixed": ("fixed 1,000, LARS (control)", "tab:gray", ":", "x"),
    }
    figure = Figure(figsize=(4.2 * len(results), 4.0), layout="constrained")
    axes = figure.subplots(1, len(results), sharey=True, squeeze=False)[0]
    for ax, (name, arms) in zip(axes, results.items(), strict=True):
        for arm, (label, color, line, marker) in styles.items():
            calls = arms[arm]["mean_calls"]
            ax.plot(
                KS,
                arms[arm]["jaccard"],
                line,
                color=color,
                marker=marker,
                label=f"{label} ({calls:,.0f})",
            )
        ax.axhline(0.95, color="black", linewidth=0.6)
        ax.set_title(name.replace("_", " "), fontsize=10)
        ax.set_xlabel("k")
        ax.set_xticks(KS)
        ax.legend(fontsize=7, loc="lower left", title="arm (mean model calls)", title_fontsize=7)
    axes[0].set_ylabel("mean pairwise Jaccard of the top-k features")
    axes[0].set_ylim(0, 1.02)
    return figure


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--n-init", type=int, default=1000)
    parser.add_argument("--n-max", type=int, default=10_000)
    parser.add_argument("--equal-n-init", type=int, default=250)
    parser.add_argument("--only", nargs="*", help="data set names (default: all)")
    parser.add_argument("--quick", action="store_true", help="3 runs, written to a temp dir")
    args = parser.parse_args()
    runs = 3 if args.quick else args.runs
    config = {
        "runs": runs,
        "n_init": args.n_init,
        "n_max": args.n_max,
        "lime_calls": args.n_init,
        "equal_n_init": args.equal_n_init,
        "num_features": NUM_FEATURES,
        "ks": list(KS),
        "seeds": list(range(runs)),
    }
    started = time.perf_counter()
    with threadpool_limits(1):
        chosen = {k: v for k, v in problems().items() if not args.only or k in args.only}
        results = {name: measure(name, problem, runs, config) for name, problem in chosen.items()}
    summary = summarise(results)
    payload = {
        "benchmark": "explain_slime",
        "machine": {"platform": platform.platform(), "cores": os.cpu_count(), "threads": 1},
        "config": config,
        "wall_seconds": time.perf_counter() - started,
        "results": results,
        "summary": summary,
    }
    out = Path(tempfile.mkdtemp(prefix="bench_slime_")) if args.quick else RESULTS
    with atomic_path(out / "explain_slime.png") as tmp:
        plot(results).savefig(tmp, format="png", dpi=110)
    atomic_write_text(out / "explain_slime.json", json.dumps(payload, indent=2) + "\n")
    print(json.dumps(summary["equal_calls"], indent=1))
    print(json.dumps(summary["equal_calls_goal"], indent=1))
    print(f"wrote {out / 'explain_slime.json'}", flush=True)


if __name__ == "__main__":
    main()
