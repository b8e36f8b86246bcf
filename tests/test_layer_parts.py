"""The layer's parts: activations, initializers, regularizers, constraints, against Keras' formulas
(written out here from Keras 3's source) and, for erfc, Python's math module."""

import math

import array_api_compat
import numpy as np
import pytest

from tconv import activations, constraints, initializers, regularizers

RNG = np.random.default_rng(7)


# --- activations ----------------------------------------------------------------------------------

def test_erfc_matches_math_erfc_to_float64_precision():
    x = np.linspace(-9.0, 9.0, 40001)
    expected = np.array([math.erfc(v) for v in x])
    got = activations._erfc(x)
    np.testing.assert_allclose(got, expected, rtol=1e-12, atol=2e-15)


@pytest.mark.parametrize("name", sorted(activations.ACTIVATIONS))
def test_every_activation_keeps_namespace_dtype_and_shape(xp, name):
    x = xp.asarray(RNG.standard_normal((2, 3, 4, 6)))
    y = activations.get(name)(x)
    assert array_api_compat.array_namespace(y) is array_api_compat.array_namespace(x)
    assert y.dtype == x.dtype
    expected_shape = (2, 3, 4, 3) if name == "glu" else (2, 3, 4, 6)
    assert tuple(y.shape) == expected_shape
    assert np.all(np.isfinite(np.asarray(y)))


def test_activations_do_not_overflow_on_large_inputs():
    x = np.array([-1000.0, -50.0, 0.0, 50.0, 700.0])
    with np.errstate(over="raise", invalid="raise", divide="raise"):
        for name in ("sigmoid", "softplus", "log_sigmoid", "elu", "selu", "celu", "mish",
                     "silu", "gelu", "softmax", "log_softmax"):
            activations.get(name)(x)


def test_keras_defaults():
    x = np.array([-2.0, -0.5, 0.0, 0.5, 4.0, 8.0])
    np.testing.assert_allclose(activations.leaky_relu(x), np.where(x > 0, x, 0.2 * x),
                               rtol=1e-7)
    np.testing.assert_allclose(activations.hard_sigmoid(x), np.clip(x + 3, 0, 6) / 6)
    np.testing.assert_allclose(activations.elu(x), np.where(x > 0, x, np.expm1(x)))
    np.testing.assert_allclose(activations.selu(x), 1.0507009873554805 * np.where(
        x > 0, x, 1.6732632423543772 * np.expm1(x)))
    exact = 0.5 * x * np.array([math.erfc(-v / math.sqrt(2)) for v in x])
    np.testing.assert_allclose(activations.gelu(x), exact, rtol=1e-7)  # float32 1/sqrt(2)
    tanh_form = 0.5 * x * (1 + np.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x ** 3)))
    np.testing.assert_allclose(activations.gelu(x, approximate=True), tanh_form, rtol=1e-7)
    np.testing.assert_allclose(activations.softmax(x[None]).sum(), 1.0)


def test_relu_arguments_follow_keras():
    x = np.array([-3.0, -1.0, 0.0, 0.5, 1.5, 2.5, 7.0])
    # Keras: x above threshold (else 0), clipped to [0, max_value], minus
    # negative_slope * relu(threshold - x).
    expected = np.clip(np.where(x > 1.0, x, 0.0), 0, 2.0) - 0.1 * np.maximum(1.0 - x, 0)
    np.testing.assert_allclose(
        activations.relu(x, negative_slope=0.1, max_value=2.0, threshold=1.0), expected)
    np.testing.assert_array_equal(activations.relu(x, max_value=6.0), np.clip(x, 0, 6))


def test_activation_names_and_callables():
    assert activations.get(None) is activations.linear
    assert activations.get("swish") is activations.silu
    custom = lambda x: 2 * x  # noqa: E731
    assert activations.get(custom) is custom
    assert activations.serialize(activations.get("swish")) == "silu"
    assert activations.serialize(custom) is custom
    with pytest.raises(ValueError, match=r"one of \[.*'gelu'.*\].*'gellu'"):
        activations.get("gellu")
    with pytest.raises(TypeError, match="activation"):
        activations.get(3)


# --- initializers ---------------------------------------------------------------------------------

KERNEL_SHAPE = (3, 3, 64, 48)  # Conv2DTranspose layout (kh, kw, filters, in_channels)
FAN_IN, FAN_OUT = 9 * 64, 9 * 48


def test_fans_of_the_conv_transpose_kernel_layout():
    assert initializers.compute_fans(KERNEL_SHAPE) == (FAN_IN, FAN_OUT)
    assert initializers.compute_fans((5, 7)) == (5, 7)
    assert initializers.compute_fans((6,)) == (6, 6)
    assert initializers.compute_fans(KERNEL_SHAPE, input_axes=[0], output_axes=[1, 2]) == \
        (3, 3 * 64)


def _uniform(limit):
    return ("uniform", limit)


def _truncated(variance):
    return ("truncated", variance)


def _normal(variance):
    return ("normal", variance)


# Keras' formulas: uniform limit sqrt(3 * scale / n); truncated normal stddev
# sqrt(scale / n) / 0.87962566103423978 cut at 2 stddev, whose variance is scale / n.
EXPECTED = {
    "glorot_uniform": _uniform(math.sqrt(6 / (FAN_IN + FAN_OUT))),
    "glorot_normal": _truncated(2 / (FAN_IN + FAN_OUT)),
    "he_uniform": _uniform(math.sqrt(6 / FAN_IN)),
    "he_normal": _truncated(2 / FAN_IN),
    "lecun_uniform": _uniform(math.sqrt(3 / FAN_IN)),
    "lecun_normal": _truncated(1 / FAN_IN),
    "random_uniform": _uniform(0.05),
    "random_normal": _normal(0.05 ** 2),
    "truncated_normal": _truncated((0.05 * 0.87962566103423978) ** 2),
}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_initializer_statistics(name):
    values = initializers.get({"class_name": name, "config": {"seed": 3}})(KERNEL_SHAPE)
    assert values.shape == KERNEL_SHAPE and values.dtype == np.float32
    values = values.astype(np.float64).ravel()
    n = values.size
    kind, parameter = EXPECTED[name]
    if kind == "uniform":
        variance = parameter ** 2 / 3
        assert np.abs(values).max() <= parameter
        assert np.abs(values).max() > parameter * (1 - 20 / n)  # the limit is reached
    else:
        variance = parameter
    if kind == "truncated":
        stddev = math.sqrt(variance) / 0.87962566103423978
        assert np.abs(values).max() <= 2 * stddev * (1 + 1e-6)
    # Six standard errors: the mean's is sqrt(var / n), the variance's at most var*sqrt(2 / n).
    assert abs(values.mean()) < 6 * math.sqrt(variance / n)
    assert abs(values.var() / variance - 1) < 6 * math.sqrt(2 / n)


@pytest.mark.parametrize("mode, fan", [("fan_in", FAN_IN), ("fan_out", FAN_OUT),
                                        ("fan_avg", (FAN_IN + FAN_OUT) / 2)])
@pytest.mark.parametrize("distribution", ["uniform", "untruncated_normal", "normal"])
def test_variance_scaling(mode, fan, distribution):
    init = initializers.VarianceScaling(scale=3.0, mode=mode, distribution=distribution, seed=1)
    values = init(KERNEL_SHAPE, dtype="float64").ravel()
    variance = 3.0 / fan
    assert abs(values.var() / variance - 1) < 6 * math.sqrt(2 / values.size)
    if distribution == "normal":  # Keras' "normal" is the truncated normal
        assert init.distribution == "truncated_normal"
        assert np.abs(values).max() <= 2 * math.sqrt(variance) / 0.87962566103423978


@pytest.mark.parametrize("shape", [(3, 3, 4, 5), (2, 2, 2, 24), (1, 1, 3, 2)])
def test_orthogonal(shape):
    values = initializers.Orthogonal(gain=1.5, seed=0)(shape, dtype="float64")
    matrix = values.reshape(-1, shape[-1])
    gram = matrix.T @ matrix if matrix.shape[0] >= matrix.shape[1] else matrix @ matrix.T
    np.testing.assert_allclose(gram, 1.5 ** 2 * np.eye(min(matrix.shape)), atol=1e-12)


def test_constant_zeros_ones_and_seeding():
    assert np.all(initializers.get("zeros")((2, 3)) == 0)
    assert np.all(initializers.get("one")((2, 3)) == 1)
    assert np.all(initializers.Constant(0.25)((4,)) == 0.25)
    seeded = initializers.GlorotUniform(seed=5)
    np.testing.assert_array_equal(seeded(KERNEL_SHAPE), seeded(KERNEL_SHAPE))
    unseeded = initializers.GlorotUniform()
    assert not np.array_equal(unseeded(KERNEL_SHAPE), unseeded(KERNEL_SHAPE))


def test_initializer_configs_round_trip():
    for name in initializers.INITIALIZERS:
        initializer = initializers.get(name)
        config = initializers.serialize(initializer)
        assert config["class_name"] == type(initializer).__name__
        assert initializers.get(config).get_config() == initializer.get_config()


def test_initializer_bad_input():
    with pytest.raises(ValueError, match=r"initializer must be one of \[.*'glorot_uniform'"):
        initializers.get("glorot_unform")
    with pytest.raises(ValueError, match="mode"):
        initializers.VarianceScaling(mode="fan_sum")
    with pytest.raises(ValueError, match="distribution"):
        initializers.VarianceScaling(distribution="cauchy")
    with pytest.raises(ValueError, match="scale"):
        initializers.VarianceScaling(scale=0.0)
    with pytest.raises(TypeError, match="seed"):
        initializers.RandomNormal(seed=1.5)
    with pytest.raises(ValueError, match="rank >= 2"):
        initializers.Orthogonal()((5,))


# --- regularizers ---------------------------------------------------------------------------------

def test_regularizer_formulas_and_namespace(xp):
    w = RNG.standard_normal((3, 3, 2, 4))
    l1, l2 = np.abs(w).sum(), (w ** 2).sum()
    for name, expected in [("l1", 0.01 * l1), ("L2", 0.01 * l2), ("l1l2", 0.0),
                           ("l1_l2", 0.01 * l1 + 0.01 * l2)]:
        penalty = regularizers.get(name)(xp.asarray(w))
        assert array_api_compat.array_namespace(penalty) is array_api_compat.array_namespace(
            xp.asarray(w))
        assert tuple(penalty.shape) == ()
        np.testing.assert_allclose(float(penalty), expected, rtol=1e-12, err_msg=name)
    custom = regularizers.L1L2(l1=0.3, l2=0.7)
    np.testing.assert_allclose(float(custom(xp.asarray(w))), 0.3 * l1 + 0.7 * l2, rtol=1e-12)


def test_regularizer_configs_and_errors():
    assert regularizers.get({"class_name": "L1L2", "config": {"l1": 0.5, "l2": 0.25}}) \
        .get_config() == {"l1": 0.5, "l2": 0.25}
    assert regularizers.serialize(regularizers.L2(0.2)) == {
        "module": "keras.regularizers", "class_name": "L2", "config": {"l2": 0.2},
        "registered_name": None}
    with pytest.raises(ValueError, match=r"regularizer must be one of \[.*'l1l2'"):
        regularizers.get("l3")
    with pytest.raises(ValueError, match="l1 must be a non-negative"):
        regularizers.L1(-0.1)


# --- constraints ----------------------------------------------------------------------------------

def _keras_norms(w, axis):
    return np.sqrt((w ** 2).sum(axis=tuple(axis) if isinstance(axis, list) else axis,
                                keepdims=True))


def test_constraint_formulas(xp):
    w = RNG.standard_normal((3, 3, 2, 4))
    original = w.copy()
    eps = 1e-7
    cases = [
        (constraints.get("max_norm"), w * np.clip(_keras_norms(w, 0), 0, 2)
         / (eps + _keras_norms(w, 0))),
        (constraints.MaxNorm(1.0, axis=[0, 1, 2]), w * np.clip(_keras_norms(w, [0, 1, 2]), 0, 1)
         / (eps + _keras_norms(w, [0, 1, 2]))),
        (constraints.get("non_neg"), np.maximum(w, 0)),
        (constraints.get("unit_norm"), w / (eps + _keras_norms(w, 0))),
        (constraints.MinMaxNorm(0.5, 1.5, rate=0.3, axis=3),
         w * (0.3 * np.clip(_keras_norms(w, 3), 0.5, 1.5) + 0.7 * _keras_norms(w, 3))
         / (eps + _keras_norms(w, 3))),
    ]
    for constraint, expected in cases:
        got = constraint(xp.asarray(w))
        np.testing.assert_allclose(np.asarray(got), expected, rtol=1e-12, err_msg=repr(constraint))
    np.testing.assert_array_equal(w, original)


def test_constraint_defaults_configs_and_errors():
    assert constraints.get("max_norm").get_config() == {"max_value": 2, "axis": 0}
    assert constraints.get("min_max_norm").get_config() == {
        "min_value": 0.0, "max_value": 1.0, "rate": 1.0, "axis": 0}
    assert constraints.get("unit_norm").get_config() == {"axis": 0}
    config = constraints.serialize(constraints.MaxNorm(3, axis=[0, 1]))
    assert constraints.get(config).get_config() == {"max_value": 3, "axis": [0, 1]}
    with pytest.raises(ValueError, match=r"constraint must be one of \[.*'max_norm'"):
        constraints.get("maxnorm")
    with pytest.raises(ValueError, match="class_name"):
        constraints.get({"config": {}})
