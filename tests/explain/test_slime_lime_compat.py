import numpy as np
import pytest
import scipy.sparse
from lime.lime_tabular import LimeTabularExplainer as LimeExplainer
from sklearn.linear_model import Ridge

from winnow.explain.exceptions import ExplainInputError, NoLocalSignalError
from winnow.explain.lime_compat import (
    LimeTabularExplainer,
    StableLimeTabularExplainer,
    TabularSampler,
)

NAMES = ["a", "b", "c", "d", "e", "f"]


@pytest.fixture(scope="module")
def training():
    rng = np.random.default_rng(0)
    data = rng.normal(size=(400, 6))
    data[:, 5] = rng.integers(0, 3, size=400)  # a categorical column of codes 0, 1, 2
    return data


def linear(x):
    return 3 * x[:, 0] - 2 * x[:, 1] + x[:, 2]


def three_classes(x):
    logits = np.column_stack([2 * x[:, 0], -x[:, 1] + x[:, 3], 0.5 * x[:, 2]])
    expd = np.exp(logits - logits.max(axis=1, keepdims=True))
    return expd / expd.sum(axis=1, keepdims=True)


def both(training, call, **kwargs):
    """The same arguments to lime's explainer and to ours; returns both explanations."""
    lime = LimeExplainer(training, feature_names=NAMES, random_state=0, **kwargs)
    ours = LimeTabularExplainer(training, feature_names=NAMES, random_state=0, **kwargs)
    return call(lime), call(ours)


def assert_same_shape(lime, ours, label_keys):
    lime_map, our_map = lime.as_map(), ours.as_map()
    assert type(our_map) is dict and list(our_map) == [int(k) for k in lime_map] == label_keys
    lime_names = lime.domain_mapper.map_exp_ids([(j, 0.0) for j in range(len(NAMES))])
    for key in our_map:
        pairs = our_map[key]
        assert len(pairs) == len(lime_map[key])
        assert all(type(j) is int and type(w) is float for j, w in pairs)
        weights = [abs(w) for _, w in pairs]
        assert weights == sorted(weights, reverse=True)  # lime's order: decreasing |weight|
        listed = ours.as_list(label=key)  # in regression both read label 1, as lime
        shown = pairs if ours.mode == "classification" else our_map[1]
        assert [name for name, _ in listed] == [lime_names[j][0] for j, _ in shown]
        assert [w for _, w in listed] == [w for _, w in shown]
    assert set(ours.intercept) == set(lime.intercept)
    assert isinstance(ours.score, float) and ours.local_pred.shape == np.shape(lime.local_pred)


@pytest.mark.parametrize("discretize", [False, True])
def test_classification_shapes_match_lime(training, discretize):
    def call(explainer):
        return explainer.explain_instance(
            training[0], three_classes, top_labels=2, num_features=3, num_samples=500
        )

    lime, ours = both(training, call, categorical_features=[5], discretize_continuous=discretize)
    assert ours.available_labels() == [int(k) for k in lime.available_labels()]
    assert_same_shape(lime, ours, [int(k) for k in lime.as_map()])
    np.testing.assert_allclose(ours.predict_proba, lime.predict_proba)
    assert ours.class_names == ["0", "1", "2"]


@pytest.mark.parametrize("discretize", [False, True])
def test_regression_shapes_match_lime(training, discretize):
    def call(explainer):
        return explainer.explain_instance(training[1], linear, num_features=3, num_samples=500)

    lime, ours = both(training, call, mode="regression", discretize_continuous=discretize)
    assert_same_shape(lime, ours, [0, 1])
    assert ours.as_list(label=0) == ours.as_list(label=1)  # lime ignores label in regression
    assert ours.local_exp[0] == [(j, -w) for j, w in ours.local_exp[1]]
    assert ours.predicted_value == pytest.approx(lime.predicted_value)
    with pytest.raises(NotImplementedError):
        ours.available_labels()


def test_same_features_and_weights_as_lime_on_a_linear_model(training):
    def call(explainer):
        return explainer.explain_instance(training[2], linear, num_features=3, num_samples=4000)

    lime, ours = both(training, call, mode="regression", discretize_continuous=False)
    theirs, mine = dict(lime.as_map()[1]), dict(ours.as_map()[1])
    assert set(mine) == {int(j) for j in theirs} == {0, 1, 2}
    for j, weight in mine.items():  # the same ridge on the same kind of sample
        assert weight == pytest.approx(theirs[j], rel=0.03)
    assert ours.certificate().converged and ours.n_samples == 4000


def test_certificate_records_growth_on_a_tie(training):
    calls = []

    scale = training.std(axis=0)

    def tied(x):  # equal slopes per standard deviation: a true tie in lime's representation
        calls.append(len(x))
        return x[:, 0] / scale[0] + x[:, 1] / scale[1]

    explainer = LimeTabularExplainer(
        training, mode="regression", discretize_continuous=False, random_state=0
    )
    result = explainer.explain_instance(
        training[0], tied, num_features=2, num_samples=100, n_max=400, alpha=0.001
    )  # a strict level: a tie passes a round with probability alpha
    record = result.certificate()
    assert not result.converged and not record.converged
    assert record.rounds == 3 and record.n_samples == 400 == result.n_samples == sum(calls)
    assert [t.n for t in record.tests] == [100, 200, 400]
    assert all(not t.passed for t in record.tests) and record.tests[-1].statistic < 0
    assert {row["leading"] for row in record.test_table()} <= {"0", "1"}


def test_labels_share_one_pool_of_model_calls(training):
    calls = []

    def counted(x):
        calls.append(len(x))
        return three_classes(x)

    explainer = LimeTabularExplainer(training, discretize_continuous=False, random_state=1)
    result = explainer.explain_instance(
        training[3], counted, labels=(0, 1, 2), num_features=2, num_samples=200, n_max=3200
    )
    sizes = [result.certificate(k).n_samples for k in (0, 1, 2)]
    assert sum(calls) == result.n_samples == max(sizes)
    alone = explainer.explain_instance(
        training[3], three_classes, labels=(1,), num_features=2, num_samples=200, n_max=3200
    )
    # Other labels do not change this one: it reads the same first rows of the pool.
    assert alone.as_map()[1] == result.as_map()[1]


def test_seeding(training):
    def run(state):
        explainer = LimeTabularExplainer(training, random_state=state)
        return [
            explainer.explain_instance(training[4], three_classes, num_samples=300).as_map()
            for _ in range(2)
        ]

    first, second = run(7)
    assert first == second  # an int seed is used afresh on every call (lime's is not)
    first, second = run(np.random.RandomState(7))
    assert first != second


def test_sampler_rows_are_consistent_with_their_representation(training):
    sampler = TabularSampler(training, NAMES, [5], {5: ["x", "y", "z"]}, "quartile")
    row = training[0]
    scaled, inputs = sampler.draw(row, 2000, np.random.default_rng(0), first=True)
    np.testing.assert_array_equal(inputs[0], row)
    np.testing.assert_array_equal(scaled[0], np.ones(6))
    for j in range(5):
        borders = sampler.borders_[j]
        codes = np.searchsorted(borders, inputs[:, j])
        np.testing.assert_array_equal(scaled[:, j], codes == np.searchsorted(borders, row[j]))
        frequency = np.mean(codes[1:] == 0)  # quartile bins are drawn with training frequency
        assert abs(frequency - 0.25) < 0.04
    assert set(np.unique(inputs[:, 5])) == {0.0, 1.0, 2.0}
    np.testing.assert_array_equal(scaled[:, 5], inputs[:, 5] == row[5])
    assert sampler.display_names(row)[5] == f"f={['x', 'y', 'z'][int(row[5])]}"


def test_continuous_rows_are_lime_standardised(training):
    sampler = TabularSampler(training, NAMES, sample_around_instance=True)
    scaled, inputs = sampler.draw(training[0], 5000, np.random.default_rng(1), first=False)
    np.testing.assert_allclose(scaled, (inputs - training.mean(0)) / training.std(0))
    np.testing.assert_allclose(inputs.mean(0), training[0], atol=4 * training.std(0).max() / 70)


def test_model_regressor_replaces_the_ridge(training):
    explainer = LimeTabularExplainer(
        training, mode="regression", discretize_continuous=False, random_state=0
    )
    kwargs = dict(num_features=3, num_samples=500)
    plain = dict(explainer.explain_instance(training[0], linear, **kwargs).as_map()[1])
    stiff = Ridge(alpha=1e5)
    shrunk = explainer.explain_instance(training[0], linear, model_regressor=stiff, **kwargs)
    for j, weight in shrunk.as_map()[1]:
        assert abs(weight) < 0.2 * abs(plain[j])
    assert not hasattr(stiff, "coef_")  # cloned, not fitted in place


def test_num_features_above_p_is_clamped_as_in_lime(training):
    explainer = LimeTabularExplainer(training[:, :4], discretize_continuous=False, random_state=0)
    result = explainer.explain_instance(
        training[0, :4], lambda x: three_classes(np.column_stack([x, x[:, :2]]))
    )
    assert sorted(j for j, _ in result.as_map()[1]) == [0, 1, 2, 3]  # lime's default is 10


def test_constant_label_raises_no_signal(training):
    def flat_third(x):
        p = 1 / (1 + np.exp(-x[:, 0]))
        return np.column_stack([1 - p, p, np.zeros(len(x))])

    explainer = LimeTabularExplainer(training, random_state=0)
    with pytest.raises(NoLocalSignalError, match="output column 2"):
        explainer.explain_instance(training[0], flat_third, labels=(2,), num_samples=200)
    result = explainer.explain_instance(training[0], flat_third, labels=(0, 1), num_samples=200)
    assert result.as_map()[1][0][0] == 0  # the feature that moves p


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"feature_selection": "forward_selection"}, "feature_selection"),
        ({"discretizer": "entropy"}, "discretizer='entropy'"),
        ({"training_data_stats": {}}, "training_data_stats"),
        ({"mode": "ranking"}, "mode='ranking'"),
        ({"categorical_features": [9]}, "categorical_features"),
        ({"kernel_width": -1.0}, "kernel_width"),
    ],
)
def test_unsupported_arguments_raise(training, kwargs, message):
    with pytest.raises(ExplainInputError, match=message):
        StableLimeTabularExplainer(training, **kwargs)


def test_bad_calls_raise(training):
    with pytest.raises(ExplainInputError, match="sparse"):
        LimeTabularExplainer(scipy.sparse.csr_matrix(training))
    explainer = LimeTabularExplainer(training, random_state=0)
    with pytest.raises(ExplainInputError, match=r"labels \[5\]"):
        explainer.explain_instance(training[0], three_classes, labels=(5,), num_samples=100)
    with pytest.raises(ExplainInputError, match="num_samples"):
        explainer.explain_instance(training[0], three_classes, num_samples=5)
    with pytest.raises(ExplainInputError, match=r"n_max \(100\) must be >= num_samples"):
        explainer.explain_instance(training[0], three_classes, num_samples=200, n_max=100)
