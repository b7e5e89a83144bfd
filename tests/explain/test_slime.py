import itertools
import math

import numpy as np
import pytest
from scipy.stats import norm

from winnow.explain.exceptions import ExplainInputError, NoLocalSignalError
from winnow.explain.slime import (
    StableLimeExplainer,
    compare_leading_features,
    lime_kernel,
    required_sample_size,
    select_with_tests,
)

COEFS = np.array([5.0, 3.0, 1.0, 0.0, 0.0, 0.0])


def linear_model(x):
    return x @ COEFS


@pytest.fixture(scope="module")
def training():
    return np.random.default_rng(0).normal(size=(300, 6))


def test_kernel_closed_form():
    d = np.array([0.0, 1.5, 3.0])
    np.testing.assert_allclose(lime_kernel(d, 1.5), [1.0, math.exp(-0.5), math.exp(-2.0)])


def test_type_one_error_matches_alpha_on_a_tie():
    """Two features with the same true correlation: the test must pass (wrongly) ~alpha."""
    rng = np.random.default_rng(1)
    alpha, trials, n = 0.1, 3000, 200
    passed = 0
    for _ in range(trials):
        x = rng.normal(size=(n, 2))
        residual = x.sum(axis=1) + rng.normal(size=n)
        passed += compare_leading_features(x, residual, [0, 1], alpha, tol=0.0)[-1]
    rate = passed / trials
    assert abs(rate - alpha) < 3 * math.sqrt(alpha * (1 - alpha) / trials), rate


def test_clear_leader_passes_and_statistic_matches_definition():
    rng = np.random.default_rng(2)
    x = rng.normal(size=(500, 3))
    residual = 3 * x[:, 0] - x[:, 1] + rng.normal(size=500)
    j1, j2, gap, statistic, z, passed = compare_leading_features(x, residual, [0, 1, 2], 0.05, 0)
    assert (j1, j2, passed) == (0, 1, True)
    products = x[:, :2] * residual[:, None]
    d = products[:, 0] + products[:, 1]  # signs: u0 > 0, u1 < 0
    assert gap == pytest.approx(d.mean())
    assert z == pytest.approx(d.mean() / (d.std(ddof=1) / math.sqrt(500)))
    assert statistic == pytest.approx(z - norm.ppf(0.975))


@pytest.mark.parametrize(
    ("n", "z", "n_max", "expected"),
    [
        (1000, 1.5, 10_000, math.ceil(1000 * (norm.ppf(0.975) / 1.5) ** 2)),  # the rule itself
        (1000, 0.5, 10_000, 2000),  # at most doubling
        (6000, 0.5, 10_000, 10_000),  # never past n_max
        (1000, 0.0, 10_000, 2000),  # no evidence at all: double
        (1000, 1.959, 10_000, 1001),  # always grows
    ],
)
def test_required_sample_size(n, z, n_max, expected):
    assert required_sample_size(n, z, 0.05, n_max) == expected


def test_selection_matches_lime_lasso_path(training):
    """On the same weighted samples, the LARS entry order is the one lime selects."""
    from lime.lime_base import LimeBase

    rng = np.random.default_rng(3)
    data = rng.normal(size=(800, 6))
    labels = linear_model(data) + rng.normal(size=800)
    weights = lime_kernel(np.linalg.norm(data - data[0], axis=1), 0.75 * math.sqrt(6))
    root = np.sqrt(weights)[:, None]
    x = (data - np.average(data, axis=0, weights=weights)) * root
    y = (labels - np.average(labels, weights=weights)) * root[:, 0]
    ours, tests = select_with_tests(x, y, 3, alpha=0.05, tol=0.0, n_max=10_000)
    base = LimeBase(kernel_fn=lambda d: d)
    theirs = base.feature_selection(data, labels, weights, 3, "lasso_path")
    assert set(ours) == set(theirs) == {0, 1, 2}
    assert all(t.passed for t in tests)


def test_linear_model_is_recovered_without_extra_samples(training):
    explainer = StableLimeExplainer(training, num_features=3, n_init=500, random_state=0)
    result = explainer.explain_instance(training[0], linear_model)
    assert result.features == (0, 1, 2)
    assert result.converged and result.n_samples == 500
    expected = COEFS[:3] * explainer.scale_[:3]  # weights are per standard deviation
    np.testing.assert_allclose(result.weights, expected, rtol=0.02)
    assert result.score == pytest.approx(1.0, abs=1e-3)
    assert result.feature_names == ("x0", "x1", "x2")


def test_same_seed_same_explanation(training):
    def noisy(x):
        return np.sin(x[:, 0] * x[:, 1]) + 0.2 * x[:, 2]

    explainer = StableLimeExplainer(training, num_features=3, n_init=200, random_state=7)
    first = explainer.explain_instance(training[5], noisy)
    second = explainer.explain_instance(training[5], noisy)
    assert first.features == second.features
    np.testing.assert_array_equal(first.weights, second.weights)
    assert first.test_table() == second.test_table()
    other = explainer.explain_instance(training[5], noisy, random_state=8)
    assert not np.array_equal(first.weights, other.weights)


def test_tie_grows_the_sample_and_stops_unconverged_at_the_cap(training):
    def tied(x):
        return x[:, 0] + x[:, 1]

    explainer = StableLimeExplainer(
        training, num_features=2, n_init=100, n_max=400, alpha=0.05, random_state=0
    )
    result = explainer.explain_instance(training[0], tied)
    assert not result.converged
    assert result.n_samples == 400
    sizes = [t.n for t in result.tests]
    assert sizes == sorted(sizes) and sizes[0] == 100
    assert all(b <= 2 * a for a, b in itertools.pairwise(sizes))
    assert not result.tests[-1].passed and result.tests[-1].step == 0
    assert set(result.features) == {0, 1}
    assert result.rounds == 3  # 100, 200, 400


def test_classification_explains_predicted_class(training):
    def proba(x):
        p = 1 / (1 + np.exp(-(2 * x[:, 0] - x[:, 3])))
        return np.column_stack([1 - p, p])

    explainer = StableLimeExplainer(
        training, mode="classification", num_features=2, n_init=400, random_state=0
    )
    row = training[np.argmax(training[:, 0])]
    result = explainer.explain_instance(row, proba)
    assert result.label == 1
    assert set(result.features) == {0, 3}
    assert result.weights[result.features.index(0)] > 0


def test_bad_parameters_name_the_field(training):
    with pytest.raises(ExplainInputError, match="alpha"):
        StableLimeExplainer(training, alpha=2.0)
    with pytest.raises(ExplainInputError, match=r"n_max \(50\) must be >= n_init"):
        StableLimeExplainer(training, n_init=100, n_max=50)
    with pytest.raises(ExplainInputError, match="unknown key"):
        StableLimeExplainer(training, n_samples=10)


def test_bad_data_is_rejected(training):
    broken = training.copy()
    broken[3, 2] = np.nan
    with pytest.raises(ExplainInputError, match="NaN"):
        StableLimeExplainer(broken)
    explainer = StableLimeExplainer(training, num_features=2, n_init=50)
    with pytest.raises(ExplainInputError, match="5 features"):
        explainer.explain_instance(training[0, :5], linear_model)
    with pytest.raises(ExplainInputError, match="regression mode"):
        explainer.explain_instance(training[0], lambda x: np.zeros((len(x), 2)))
    with pytest.raises(ExplainInputError, match="num_features"):
        StableLimeExplainer(training, num_features=7).explain_instance(training[0], linear_model)


def test_alpha_reaches_the_test(training):
    """The reference code ignores alpha; here a stricter level must demand more samples."""

    def close_pair(x):
        return 1.0 * x[:, 0] + 0.8 * x[:, 1]

    sizes = {}
    for alpha in (0.3, 0.001):
        explainer = StableLimeExplainer(
            training, num_features=2, n_init=100, n_max=20_000, alpha=alpha, random_state=0
        )
        sizes[alpha] = explainer.explain_instance(training[0], close_pair).n_samples
    assert sizes[0.001] > sizes[0.3]


def test_zero_spread_with_zero_gap_is_a_tie_not_a_pass():
    """Identical columns give d = 0 everywhere: 0/0 is no evidence, so z = 0 and the step fails."""
    rng = np.random.default_rng(4)
    column = rng.normal(size=300)
    x = np.column_stack([column, column, 0.1 * rng.normal(size=300)])
    residual = column + rng.normal(size=300)
    j1, j2, gap, statistic, z, passed = compare_leading_features(x, residual, [0, 1, 2], 0.05, 0)
    assert {j1, j2} == {0, 1}
    assert gap == 0.0 and z == 0.0 and not passed
    assert statistic == pytest.approx(-norm.ppf(0.975))
    assert required_sample_size(300, z, 0.05, 10_000) == 600


def test_zero_spread_with_positive_gap_passes():
    """Every sample shows the same positive difference: z = +inf, the order is not in doubt."""
    base = np.random.default_rng(5).uniform(1, 2, size=200)
    x = np.column_stack([base + 1.0, base])
    j1, j2, gap, _, z, passed = compare_leading_features(x, np.ones(200), [0, 1], 0.05, 0)
    assert (j1, j2) == (0, 1) and gap == pytest.approx(1.0)
    assert z == math.inf and passed


def test_model_linear_in_fewer_features_stops_without_an_arbitrary_pick(training):
    """After x0 and x1 the residual is zero: no third feature enters, nothing is left to test."""
    explainer = StableLimeExplainer(training, num_features=3, n_init=300, random_state=0)
    result = explainer.explain_instance(training[0], lambda x: 3 * x[:, 0] - x[:, 1])
    assert result.features == (0, 1) and result.weights.shape == (2,)
    assert result.converged and result.n_samples == 300 and result.rounds == 1
    assert [t.step for t in result.tests] == [0, 1]


def test_locally_constant_model_raises_a_typed_error(training):
    explainer = StableLimeExplainer(training, num_features=2, n_init=100, random_state=0)
    with pytest.raises(NoLocalSignalError, match="output column 0 is 3 at all 100") as caught:
        explainer.explain_instance(training[0], lambda x: np.full(len(x), 3.0))
    assert isinstance(caught.value, ExplainInputError) and isinstance(caught.value, ValueError)

    def one_class_flat(x):
        p = 1 / (1 + np.exp(-x[:, 0]))
        return np.column_stack([1 - p, p, np.zeros(len(x))])

    classifier = StableLimeExplainer(
        training, mode="classification", num_features=2, n_init=100, random_state=0
    )
    with pytest.raises(NoLocalSignalError, match="output column 2"):
        classifier.explain_instance(training[0], one_class_flat, label=2)
    assert classifier.explain_instance(training[0], one_class_flat, label=1).features[0] == 0
