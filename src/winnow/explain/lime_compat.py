"""``lime.lime_tabular.LimeTabularExplainer``'s interface, with S-LIME choosing the sample size.

A lime user swaps one import::

    from winnow.explain.lime_compat import LimeTabularExplainer  # was: from lime.lime_tabular

The constructor and ``explain_instance`` take lime's argument names, and the result answers
lime's ``as_list(label=...)``, ``as_map()``, ``available_labels()``, ``intercept``, ``score``,
``local_pred`` and ``predict_proba`` / ``predicted_value``. It adds each label's S-LIME record,
``certificate(label)``: rounds, final sample size, the test statistic of every step, converged.

Sampling is lime's: continuous features are gaussian (training standard deviations, around the
training mean or the row); with ``discretize_continuous`` (lime's default) each continuous
feature is cut at its quartiles (or deciles), a bin is drawn by training frequency and a value
inside it by a truncated normal; categorical features are drawn by training frequency. The
explanation is fitted on lime's representation (standardised values; 1 where a row has the
instance's bin or category, else 0), and S-LIME's test runs on that representation.

On purpose unlike lime:

- ``num_samples`` is the first sample size; the test may grow it to ``n_max`` (default
  ``max(10_000, num_samples)``). All labels read one pool, so model calls = the largest n.
- Selection is LARS entry order with a test before each step (lime's ``lasso_path`` without
  the test); ``feature_selection`` may be 'auto' or 'lasso_path', others raise.
- An int ``random_state`` is used afresh on every call: the same seed, the same explanation
  (lime seeds once, so its successive calls differ).
- A label whose output is constant near the row raises :class:`NoLocalSignalError` (lime
  returns zero weights); sparse data, the 'entropy' discretizer, discretizer objects and
  ``training_data_stats`` raise :class:`ExplainInputError` rather than being ignored.
- ``verbose`` and ``training_labels`` are accepted and unused (lime uses the labels only for the
  entropy discretizer). Drawing (``as_html``, ``as_pyplot_figure``) is not provided;
  :func:`winnow.explain.plots.plot_explanation` draws ``certificate(label)``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence

import numpy as np

from winnow.common.config import load_config
from winnow.common.exceptions import ConfigError
from winnow.explain.exceptions import ExplainInputError
from winnow.explain.slime import (
    PerturbationPool,
    SlimeExplanation,
    SlimeParams,
    _feature_names,
    _finite_matrix,
    explain_column,
    lime_kernel,
    model_outputs,
)

__all__ = [
    "LimeTabularExplainer",
    "StableLimeExplanation",
    "StableLimeTabularExplainer",
    "TabularSampler",
]

PERCENTILES = {"quartile": (25, 50, 75), "decile": tuple(range(10, 100, 10))}
SELECTIONS = ("auto", "lasso_path")


class TabularSampler:
    """lime's perturbations of one row: gaussian, binned or categorical, column by column.

    ``draw`` returns ``(scaled, inputs)``, both ``[count, p]``: ``inputs`` go to the model,
    ``scaled`` is what the explanation is fitted on. Bins of a discretised column are the
    training percentiles (``PERCENTILES[discretizer]``); bin ``b`` of borders ``q`` holds
    ``q[b-1] < x <= q[b]``.
    """

    def __init__(
        self,
        training_data: np.ndarray,
        feature_names: Sequence[str],
        categorical_features: Iterable[int] = (),
        categorical_names: Mapping[int, Sequence[str]] | None = None,
        discretizer: str | None = None,
        sample_around_instance: bool = False,
    ):
        data = training_data
        p = data.shape[1]
        self.feature_names = tuple(feature_names)
        self.categorical_names = dict(categorical_names or {})
        self.sample_around_instance = sample_around_instance
        self.mean_ = data.mean(axis=0)
        std = data.std(axis=0)
        self.scale_ = np.where(std > 0, std, 1.0)
        categorical = sorted({int(j) for j in categorical_features})
        self.borders_ = {}
        if discretizer is not None:
            for j in sorted(set(range(p)) - set(categorical)):
                self.borders_[j] = np.unique(np.percentile(data[:, j], PERCENTILES[discretizer]))
        self.continuous_ = [j for j in range(p) if j not in categorical and j not in self.borders_]
        self.levels_ = {}
        for j in categorical + list(self.borders_):
            values, counts = np.unique(self.code(j, data[:, j]), return_counts=True)
            self.levels_[j] = (values, counts / counts.sum())
        self.bins_ = {j: _bin_stats(data[:, j], q) for j, q in self.borders_.items()}

    def code(self, j: int, values):
        """Bin index of ``values`` in column ``j`` if it is discretised, else the values."""
        return np.searchsorted(self.borders_[j], values) if j in self.borders_ else values

    def origin(self, row: np.ndarray) -> np.ndarray:
        """The row's own representation: standardised values, 1 for bins and categories."""
        scaled = np.ones(row.shape[0])
        cont = self.continuous_
        scaled[cont] = (row[cont] - self.mean_[cont]) / self.scale_[cont]
        return scaled

    def draw(
        self, row: np.ndarray, count: int, rng: np.random.Generator, first: bool
    ) -> tuple[np.ndarray, np.ndarray]:
        """``count`` perturbed rows; row 0 is ``row`` itself when ``first``."""
        p, cont = row.shape[0], self.continuous_
        inputs, scaled = np.empty((count, p)), np.empty((count, p))
        centre = row if self.sample_around_instance else self.mean_
        inputs[:, cont] = rng.normal(size=(count, len(cont))) * self.scale_[cont] + centre[cont]
        scaled[:, cont] = (inputs[:, cont] - self.mean_[cont]) / self.scale_[cont]
        for j, (values, probabilities) in self.levels_.items():
            codes = rng.choice(values, size=count, p=probabilities)
            scaled[:, j] = codes == self.code(j, row[j])
            inputs[:, j] = self._value_in_bin(j, codes, rng) if j in self.borders_ else codes
        if first:
            inputs[0], scaled[0] = row, self.origin(row)
        return scaled, inputs

    def display_names(self, row: np.ndarray) -> tuple[str, ...]:
        """lime's names: ``name``, ``name=category`` or the row's bin, e.g. ``1.20 < x <= 3.40``."""
        names = []
        for j, name in enumerate(self.feature_names):
            if j in self.borders_:
                q, b = self.borders_[j], int(self.code(j, row[j]))
                if b == 0:
                    names.append(f"{name} <= {q[0]:.2f}")
                elif b == len(q):
                    names.append(f"{name} > {q[-1]:.2f}")
                else:
                    names.append(f"{q[b - 1]:.2f} < {name} <= {q[b]:.2f}")
            elif j in self.levels_:
                value = int(row[j])
                category = (
                    self.categorical_names[j][value] if j in self.categorical_names else value
                )
                names.append(f"{name}={category}")
            else:
                names.append(name)
        return tuple(names)

    def _value_in_bin(self, j: int, codes: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """A value inside each drawn bin: a normal with the bin's training moments, truncated."""
        from scipy.stats import truncnorm

        means, stds, lows, highs = (stat[codes] for stat in self.bins_[j])
        low, high = (lows - means) / stds, (highs - means) / stds
        values = lows.copy()  # a bin of one value (lime returns 0 here, not the value)
        wide = low != high
        if wide.any():
            values[wide] = truncnorm.rvs(
                low[wide], high[wide], loc=means[wide], scale=stds[wide], random_state=rng
            )
        return values


def _bin_stats(column: np.ndarray, borders: np.ndarray) -> tuple[np.ndarray, ...]:
    """Per bin: training mean, standard deviation (+1e-11, as lime), lower and upper bound."""
    codes = np.searchsorted(borders, column)
    members = [column[codes == b] for b in range(len(borders) + 1)]
    means = np.array([m.mean() if len(m) else 0.0 for m in members])
    stds = np.array([m.std() if len(m) else 0.0 for m in members]) + 1e-11
    lows = np.concatenate([[column.min()], borders])
    highs = np.concatenate([borders, [column.max()]])
    return means, stds, lows, highs


class StableLimeExplanation:
    """lime's ``Explanation`` for one row, plus each label's S-LIME record.

    ``local_exp``: label -> ``[(feature id, weight), ...]`` by decreasing ``|weight|``;
    ``intercept``: label -> float; ``score`` and ``local_pred`` (``[1]``) belong to the last
    label explained, as in lime; ``n_samples`` is the number of model calls. In regression lime's
    conventions hold: ``as_list`` ignores ``label``, ``local_exp[1]`` holds the weights and
    ``local_exp[0]`` their negatives.
    """

    def __init__(
        self,
        mode: str,
        class_names: list[str],
        records: dict[int, SlimeExplanation],
        first_output: np.ndarray,
        n_samples: int,
        top_labels: list[int] | None = None,
        output_range: tuple[float, float] = (0.0, 1.0),
    ):
        self.mode, self.class_names, self.n_samples = mode, class_names, n_samples
        self._records = records
        self.local_exp = {label: _by_weight(r) for label, r in records.items()}
        self.intercept = {label: r.intercept for label, r in records.items()}
        last = records[list(records)[-1]]
        self.score, self.local_pred = last.score, np.array([last.local_prediction])
        self._names = last.column_names
        if mode == "classification":
            self.predict_proba, self.top_labels = first_output, top_labels
        else:
            self.predicted_value = float(first_output[0])
            self.min_value, self.max_value = output_range
            self.dummy_label = 1
            self.local_exp = {0: [(j, -w) for j, w in self.local_exp[1]], **self.local_exp}
            self.intercept = {0: self.intercept[1], **self.intercept}

    @property
    def converged(self) -> bool:
        """Whether every label's tests all passed before ``n_max``."""
        return all(r.converged for r in self._records.values())

    def available_labels(self) -> list[int]:
        """Labels explained (classification only, as in lime)."""
        if self.mode != "classification":
            raise NotImplementedError("Not supported for regression explanations.")
        return list(self.top_labels) if self.top_labels else list(self.local_exp)

    def as_list(self, label: int = 1) -> list[tuple[str, float]]:
        """``[(feature name, weight), ...]`` by decreasing ``|weight|``; lime's names for bins."""
        key = label if self.mode == "classification" else 1
        return [(self._names[j], w) for j, w in self.local_exp[key]]

    def as_map(self) -> dict[int, list[tuple[int, float]]]:
        """label -> ``[(feature id, weight), ...]``, as lime's ``as_map``."""
        return self.local_exp

    def certificate(self, label: int = 1) -> SlimeExplanation:
        """S-LIME's record for ``label``: ``rounds``, ``n_samples``, ``converged``, ``tests``,
        ``test_table()`` (statistic, z and requested n per step); ignores ``label`` in regression.
        """
        key = label if self.mode == "classification" else 1
        if key not in self._records:
            raise ExplainInputError(
                f"label {label} was not explained; explained: {list(self._records)}"
            )
        return self._records[key]


def _by_weight(record: SlimeExplanation) -> list[tuple[int, float]]:
    pairs = [(int(j), float(w)) for j, w in zip(record.features, record.weights, strict=True)]
    return sorted(pairs, key=lambda pair: abs(pair[1]), reverse=True)


class StableLimeTabularExplainer:
    """S-LIME behind ``lime.lime_tabular.LimeTabularExplainer``'s constructor.

    Parameters are lime's (see the module docstring for the differences). ``training_data``:
    ``[n_train, p]`` finite floats; ``categorical_features``: column indices whose values are
    integer codes; ``kernel``: ``kernel(distances [n], kernel_width) -> weights [n]``;
    ``random_state``: an int (the same explanation on every call), a numpy ``Generator`` or
    ``RandomState`` (consumed, so calls differ) or None.
    """

    def __init__(
        self,
        training_data: np.ndarray,
        mode: str = "classification",
        training_labels=None,
        feature_names: Sequence[str] | None = None,
        categorical_features: Iterable[int] | None = None,
        categorical_names: Mapping[int, Sequence[str]] | None = None,
        kernel_width: float | None = None,
        kernel: Callable[[np.ndarray, float], np.ndarray] | None = None,
        verbose: bool = False,
        class_names: Sequence[str] | None = None,
        feature_selection: str = "auto",
        discretize_continuous: bool = True,
        discretizer: str = "quartile",
        sample_around_instance: bool = False,
        random_state: int | np.random.Generator | np.random.RandomState | None = None,
        training_data_stats: dict | None = None,
    ):
        if mode not in ("classification", "regression"):
            raise ExplainInputError(f"mode={mode!r}; expected 'classification' or 'regression'")
        if feature_selection not in SELECTIONS:
            raise ExplainInputError(
                f"feature_selection={feature_selection!r} is not supported: S-LIME tests each "
                "LARS step (lime's 'lasso_path'); fix: pass 'auto' or 'lasso_path'"
            )
        if discretize_continuous and discretizer not in PERCENTILES:
            raise ExplainInputError(
                f"discretizer={discretizer!r} is not supported; fix: pass 'quartile' or "
                "'decile', or discretize_continuous=False"
            )
        if training_data_stats is not None:
            raise ExplainInputError(
                "training_data_stats is not supported; fix: pass the training data itself"
            )
        if hasattr(training_data, "tocsr"):
            raise ExplainInputError("sparse training_data is not supported; fix: pass .toarray()")
        if kernel_width is not None and not kernel_width > 0:
            raise ExplainInputError(f"kernel_width={kernel_width} must be > 0")
        data = _finite_matrix(training_data, "training_data")
        p = data.shape[1]
        if p < 2:
            raise ExplainInputError("training_data needs at least 2 feature columns to compare")
        categorical = [int(j) for j in (categorical_features or ())]
        if any(not 0 <= j < p for j in categorical):
            raise ExplainInputError(f"categorical_features {categorical} must lie in [0, {p})")
        names = [str(j) for j in range(p)] if feature_names is None else feature_names
        self.mode = mode
        self.feature_names = list(_feature_names(names, p))
        self.class_names = None if class_names is None else list(class_names)
        self.kernel_width = float(kernel_width or 0.75 * math.sqrt(p))
        self.kernel = kernel or lime_kernel
        self.feature_selection = feature_selection
        self.random_state = random_state
        if isinstance(random_state, np.random.RandomState):
            self.random_state = np.random.default_rng(random_state.randint(2**31 - 1))
        self.sampler = TabularSampler(
            data,
            self.feature_names,
            categorical,
            categorical_names,
            discretizer if discretize_continuous else None,
            sample_around_instance,
        )

    def explain_instance(
        self,
        data_row: np.ndarray,
        predict_fn: Callable[[np.ndarray], np.ndarray],
        labels: Iterable[int] = (1,),
        top_labels: int | None = None,
        num_features: int = 10,
        num_samples: int = 5000,
        distance_metric: str = "euclidean",
        model_regressor=None,
        *,
        n_max: int | None = None,
        alpha: float = 0.05,
        tol: float = 1e-3,
    ) -> StableLimeExplanation:
        """Explain ``predict_fn`` at ``data_row`` ([p]) for ``labels`` (or the ``top_labels``).

        As lime's, with ``num_samples`` the first sample size and three S-LIME keywords:
        ``n_max`` (None: ``max(10_000, num_samples)``), ``alpha`` and ``tol`` (see
        :class:`~winnow.explain.slime.SlimeParams`). ``num_features`` above ``p`` means ``p``.
        ``model_regressor`` (cloned per label) replaces the ridge. Raises
        :class:`NoLocalSignalError` when an explained output is constant near the row.
        """
        p = len(self.feature_names)
        row = _finite_matrix(np.asarray(data_row, dtype=float).reshape(1, -1), "data_row")[0]
        if row.shape[0] != p:
            raise ExplainInputError(f"data_row has {row.shape[0]} features, training_data has {p}")
        params = _call_params(self.mode, num_samples, n_max, alpha, tol, min(num_features, p))
        rng = self._generator()
        origin = self.sampler.origin(row)
        pool = PerturbationPool(
            lambda count, first: self.sampler.draw(row, count, rng, first),
            lambda inputs: model_outputs(predict_fn, inputs, self.mode),
            lambda scaled: self._weigh(scaled, origin, distance_metric),
        )
        outputs = pool.take(params.n_init).outputs
        names = self.sampler.display_names(row)
        if self.mode == "regression":
            record = explain_column(pool, 0, params, names, None, model_regressor)
            span = pool.take(pool.calls).outputs[:, 0]
            return StableLimeExplanation(
                self.mode,
                ["negative", "positive"],
                {1: record},
                outputs[0],
                pool.calls,
                output_range=(float(span.min()), float(span.max())),
            )
        if self.class_names is None:
            self.class_names = [str(k) for k in range(outputs.shape[1])]
        chosen, top = _choose_labels(outputs[0], labels, top_labels)
        records = {
            label: explain_column(pool, label, params, names, label, model_regressor)
            for label in chosen
        }
        return StableLimeExplanation(
            self.mode, self.class_names, records, outputs[0], pool.calls, top_labels=top
        )

    def _generator(self) -> np.random.Generator:
        if isinstance(self.random_state, np.random.Generator):
            return self.random_state
        return np.random.default_rng(self.random_state)

    def _weigh(self, scaled: np.ndarray, origin: np.ndarray, metric: str) -> np.ndarray:
        from sklearn.metrics import pairwise_distances

        distances = pairwise_distances(scaled, origin[None, :], metric=metric).ravel()
        return np.asarray(self.kernel(distances, self.kernel_width), dtype=float)


LimeTabularExplainer = StableLimeTabularExplainer
"""The name lime users import: ``from winnow.explain.lime_compat import LimeTabularExplainer``."""


def _call_params(
    mode: str, num_samples: int, n_max: int | None, alpha: float, tol: float, num_features: int
) -> SlimeParams:
    values = dict(
        mode=mode,
        n_init=num_samples,
        n_max=max(10_000, num_samples) if n_max is None else n_max,
        alpha=alpha,
        tol=tol,
        num_features=num_features,
    )
    try:
        params = load_config(SlimeParams, values)
    except ConfigError as exc:
        raise ExplainInputError(str(exc).replace("n_init", "num_samples (n_init)")) from None
    if params.n_max < params.n_init:
        raise ExplainInputError(
            f"n_max ({params.n_max}) must be >= num_samples ({params.n_init}); fix: raise n_max"
        )
    return params


def _choose_labels(
    first: np.ndarray, labels: Iterable[int], top_labels: int | None
) -> tuple[list[int], list[int] | None]:
    """lime's rule: the ``top_labels`` most probable classes (ascending), else ``labels``."""
    if top_labels:
        chosen = [int(k) for k in np.argsort(first)[-top_labels:]]
        return chosen, chosen[::-1]
    chosen = [int(k) for k in labels]
    bad = [k for k in chosen if not 0 <= k < first.shape[0]]
    if bad:
        raise ExplainInputError(f"labels {bad} are not columns of the {first.shape[0]} classes")
    return chosen, None
