"""tconv.Conv2DTranspose's Keras surface: every argument, build / call / weights / config, errors.

Numbers are checked against tests/reference.py (float64 direct definition); Keras itself is the
reference in test_layer_golden.py.
"""

import json

import array_api_compat
import numpy as np
import pytest
import reference

import tconv
from tconv import activations
from helpers import reference_options, to_numpy

RNG = np.random.default_rng(11)






OPTIONS = [
    dict(strides=1, padding="valid"),
    dict(strides=2, padding="same", dilation_rate=1),
    dict(strides=(2, 3), padding="valid", output_padding=(1, 2)),
    dict(strides=1, padding="same", dilation_rate=(2, 1)),
    dict(strides=3, padding="same", output_padding=1, data_format="channels_first"),
    dict(strides=(1, 2), padding="valid", dilation_rate=2, data_format="channels_first"),
]


@pytest.mark.parametrize("options", OPTIONS, ids=str)
def test_every_geometry_argument_matches_the_reference(xp, options):
    channels_first = options.get("data_format") == "channels_first"
    x = RNG.standard_normal((2, 3, 4, 5) if channels_first else (2, 4, 5, 3))
    layer = tconv.Conv2DTranspose(4, (3, 2), activation="tanh", dtype="float64",
                                  bias_initializer="random_normal", **options)
    y = layer(xp.asarray(x))
    assert array_api_compat.array_namespace(y) is array_api_compat.array_namespace(
        xp.asarray(x))
    kernel, bias = layer.get_weights()
    x_last = np.transpose(x, (0, 2, 3, 1)) if channels_first else x
    expected = np.tanh(reference.forward(x_last, kernel, bias, **reference_options(options)))
    if channels_first:
        expected = np.transpose(expected, (0, 3, 1, 2))
    np.testing.assert_allclose(to_numpy(y), expected, rtol=1e-10, atol=1e-12)
    assert tuple(y.shape) == layer.compute_output_shape(x.shape)
    assert layer.compute_output_shape((None, *x.shape[1:]))[0] is None


def test_lazy_build_takes_the_first_inputs_namespace():
    torch = pytest.importorskip("torch", reason="torch is not installed")
    layer = tconv.Conv2DTranspose(2, 3)
    assert not layer.built and layer.weights == []
    y = layer(torch.ones((1, 4, 4, 3)))
    assert layer.built and isinstance(layer.kernel, torch.Tensor)
    assert layer.kernel.shape == (3, 3, 2, 3) and layer.bias.shape == (2,)
    assert isinstance(y, torch.Tensor) and y.dtype == torch.float32


def test_input_shape_builds_numpy_until_set_weights_says_otherwise():
    torch = pytest.importorskip("torch", reason="torch is not installed")
    layer = tconv.Conv2DTranspose(2, 3, strides=2, input_shape=(4, 4, 3))
    assert layer.built and isinstance(layer.kernel, np.ndarray)
    x = torch.asarray(RNG.standard_normal((1, 4, 4, 3)), dtype=torch.float32)
    with pytest.raises(TypeError, match="numpy arrays but the inputs are torch.*set_weights"):
        layer(x)
    numpy_output = layer(x.numpy())
    layer.set_weights([torch.from_numpy(w) for w in layer.get_weights()])
    assert isinstance(layer.kernel, torch.Tensor)
    np.testing.assert_allclose(layer(x).numpy(), numpy_output, rtol=1e-6, atol=1e-6)


def test_build_and_weights_surface():
    layer = tconv.Conv2DTranspose(5, (2, 3), data_format="channels_first")
    layer.build((None, 7, 4, 4))
    kernel, bias = layer.get_weights()
    assert kernel.shape == (2, 3, 5, 7) and kernel.dtype == np.float32
    np.testing.assert_array_equal(bias, np.zeros(5, np.float32))
    assert layer.weights == layer.trainable_weights and layer.non_trainable_weights == []
    frozen = tconv.Conv2DTranspose(5, 2, trainable=False, use_bias=False, input_shape=(3, 3, 2))
    assert len(frozen.weights) == 1 and frozen.trainable_weights == []
    assert frozen.non_trainable_weights == frozen.weights
    with pytest.raises(ValueError, match="channel dimension"):
        tconv.Conv2DTranspose(2, 2).build((None, 4, 4, None))


def test_kernel_initializer_uses_keras_fans():
    layer = tconv.Conv2DTranspose(64, 3, kernel_initializer={"class_name": "HeUniform",
                                                             "config": {"seed": 1}},
                                  input_shape=(4, 4, 48))
    limit = np.sqrt(6 / (3 * 3 * 64))  # fan_in = kh * kw * filters
    assert np.abs(layer.kernel).max() <= limit
    assert np.abs(layer.kernel).max() > 0.99 * limit


def test_set_weights_copies_casts_and_names_bad_shapes():
    layer = tconv.Conv2DTranspose(2, 3, input_shape=(4, 4, 3))
    kernel = RNG.standard_normal((3, 3, 2, 3))
    bias = [0.5, -0.5]
    layer.set_weights([kernel, bias])
    assert layer.kernel.dtype == np.float32 and layer.bias.dtype == np.float32
    kernel[...] = 0.0
    assert np.any(layer.kernel != 0)  # a copy, not a view of the caller's array
    with pytest.raises(ValueError, match=r"'kernel'.*\(3, 3, 2, 3\).*\(3, 3, 3, 2\)"):
        layer.set_weights([np.zeros((3, 3, 3, 2)), np.zeros(2)])
    with pytest.raises(ValueError, match=r"'bias'.*\(2,\).*\(3,\)"):
        layer.set_weights([np.zeros((3, 3, 2, 3)), np.zeros(3)])
    with pytest.raises(ValueError, match=r"expects 2 weights"):
        layer.set_weights([np.zeros((3, 3, 2, 3))])
    with pytest.raises(ValueError, match="not built"):
        tconv.Conv2DTranspose(2, 3).set_weights([np.zeros((3, 3, 2, 3)), np.zeros(2)])


def test_call_does_not_mutate_its_input():
    layer = tconv.Conv2DTranspose(2, 3, activation="relu", dtype="float64")
    x = RNG.standard_normal((1, 4, 4, 3))
    original = x.copy()
    layer(x)
    np.testing.assert_array_equal(x, original)


def test_dtype_policies():
    torch = pytest.importorskip("torch", reason="torch is not installed")
    x = RNG.standard_normal((1, 4, 4, 3))
    assert tconv.Conv2DTranspose(2, 3)(x).dtype == np.float32  # inputs cast, as Keras does
    assert tconv.Conv2DTranspose(2, 3, dtype="float64")(x.astype(np.float32)).dtype == \
        np.float64
    mixed = tconv.Conv2DTranspose(2, 3, dtype={"class_name": "Policy",
                                               "config": {"name": "mixed_float16"}})
    y = mixed(torch.from_numpy(x))
    assert y.dtype == torch.float16 and mixed.kernel.dtype == torch.float32
    assert (mixed.dtype, mixed.compute_dtype) == ("float32", "float16")
    with pytest.raises(ValueError, match="dtype must be one of"):
        tconv.Conv2DTranspose(2, 3, dtype="int32")
    with pytest.raises(TypeError, match="bfloat16.*numpy"):
        tconv.Conv2DTranspose(2, 3, dtype="bfloat16")(x)


def test_losses_and_constraints():
    layer = tconv.Conv2DTranspose(
        3, 2, dtype="float64", kernel_regularizer="l2", bias_regularizer="l1",
        activity_regularizer=tconv.regularizers.L1L2(l1=0.1, l2=0.2),
        bias_initializer="random_normal", kernel_constraint="unit_norm",
        bias_constraint="non_neg")
    assert layer.losses == []
    x = RNG.standard_normal((4, 3, 3, 2))
    y = layer(x)
    kernel, bias = layer.get_weights()
    activity, kernel_loss, bias_loss = (float(loss) for loss in layer.losses)
    assert activity == pytest.approx((0.1 * np.abs(y).sum() + 0.2 * (y ** 2).sum()) / 4)
    assert kernel_loss == pytest.approx(0.01 * (kernel ** 2).sum())
    assert bias_loss == pytest.approx(0.01 * np.abs(bias).sum())
    layer.apply_constraints()
    new_kernel, new_bias = layer.get_weights()
    np.testing.assert_allclose(new_kernel, kernel / (1e-7 + np.sqrt(
        (kernel ** 2).sum(axis=0, keepdims=True))))
    np.testing.assert_array_equal(new_bias, np.maximum(bias, 0))


def test_get_config_from_config_round_trip():
    layer = tconv.Conv2DTranspose(
        4, (3, 2), strides=(2, 1), padding="SAME", output_padding=(1, 0),
        data_format="channels_first", dilation_rate=1, activation="leaky_relu", use_bias=False,
        kernel_initializer=tconv.initializers.VarianceScaling(2.0, "fan_out", "uniform", seed=4),
        kernel_regularizer="l1_l2", activity_regularizer="l2",
        kernel_constraint=tconv.constraints.MinMaxNorm(0.1, 0.9, 0.5, axis=[0, 1]),
        name="up", dtype="float64", trainable=False)
    config = layer.get_config()
    json.dumps(config)
    assert config["padding"] == "same" and config["name"] == "up"
    assert config["kernel_regularizer"]["config"] == {"l1": 0.01, "l2": 0.01}
    clone = tconv.Conv2DTranspose.from_config(config)
    assert clone.get_config() == config
    x = RNG.standard_normal((1, 5, 3, 3))
    clone.build(x.shape)
    layer.build(x.shape)
    clone.set_weights(layer.get_weights())
    np.testing.assert_array_equal(clone(x), layer(x))


def test_callables_are_accepted_and_kept_in_the_config():
    def double(x):
        return 2 * x

    def ones(shape, dtype=None):
        return np.ones(shape)

    def total(w):
        return np.sum(w)

    layer = tconv.Conv2DTranspose(1, 1, activation=double, kernel_initializer=ones,
                                  kernel_regularizer=total, kernel_constraint=np.abs,
                                  use_bias=False, dtype="float64")
    x = RNG.standard_normal((1, 2, 2, 1))
    np.testing.assert_allclose(layer(x), 2 * x)
    assert float(layer.losses[0]) == 1.0
    config = layer.get_config()
    assert config["activation"] is double and config["kernel_initializer"] is ones
    assert config["kernel_regularizer"] is total and config["kernel_constraint"] is np.abs


def test_auto_names_are_unique():
    first, second = tconv.Conv2DTranspose(1, 1), tconv.Conv2DTranspose(1, 1)
    assert first.name.startswith("conv2d_transpose") and first.name != second.name


@pytest.mark.parametrize("argument, value, message", [
    ("activation", "rellu", r"activation must be a callable or one of \[.*'relu'"),
    ("kernel_initializer", "glorot", r"initializer must be one of \[.*'glorot_uniform'"),
    ("bias_initializer", "zeroes", r"initializer must be one of \[.*'zeros'"),
    ("kernel_regularizer", "l3", r"regularizer must be one of \[.*'l2'"),
    ("activity_regularizer", "L1_L2", r"regularizer must be one of \[.*'l1_l2'"),
    ("kernel_constraint", "nonneg", r"constraint must be one of \[.*'non_neg'"),
    ("bias_constraint", "unitnorm", r"constraint must be one of \[.*'unit_norm'"),
])
def test_misspelled_names_list_the_valid_ones(argument, value, message):
    with pytest.raises(ValueError, match=message):
        tconv.Conv2DTranspose(2, 3, **{argument: value})


@pytest.mark.parametrize("kwargs, error, message", [
    (dict(filters=0), ValueError, "filters must be a positive int"),
    (dict(filters=2.5), TypeError, "filters must be a positive int"),
    (dict(kernel_size=(3, 0)), ValueError, "kernel_size must be positive"),
    (dict(strides=0), ValueError, "strides must be positive"),
    (dict(padding="full"), ValueError, "padding must be 'valid' or 'same'"),
    (dict(strides=2, output_padding=2), ValueError, "output_padding must be lower than strides"),
    (dict(data_format="NHWC"), ValueError, "data_format must be"),
    (dict(dilation_rate=(1, 0)), ValueError, "dilation_rate must be positive"),
    (dict(kernel_size=2.0), TypeError, "kernel_size must be an int"),
    (dict(filter=3), ValueError, r"unrecognized keyword arguments.*\['filter'\]"),
    (dict(name=3), TypeError, "name must be a string"),
])
def test_bad_arguments(kwargs, error, message):
    arguments = dict(filters=2, kernel_size=3)
    arguments.update(kwargs)
    with pytest.raises(error, match=message):
        tconv.Conv2DTranspose(**arguments)


def test_tf_keras_2_config_keys():
    config = tconv.Conv2DTranspose(2, 3).get_config()
    config.update(batch_input_shape=[None, 4, 4, 3], groups=1, dtype="float32")
    assert tconv.Conv2DTranspose.from_config(config).kernel.shape == (3, 3, 2, 3)
    config["groups"] = 2
    with pytest.raises(ValueError, match="groups must be 1"):
        tconv.Conv2DTranspose.from_config(config)


def test_rank_and_channel_errors():
    layer = tconv.Conv2DTranspose(2, 3, input_shape=(4, 4, 3))
    with pytest.raises(ValueError, match="in_channels"):
        layer(np.zeros((1, 4, 4, 5), np.float32))
    with pytest.raises(ValueError, match="rank 4"):
        tconv.Conv2DTranspose(2, 3)(np.zeros((4, 4, 3), np.float32))


def test_activation_runs_on_the_last_axis_in_channels_first():
    layer = tconv.Conv2DTranspose(3, 2, activation="softmax", data_format="channels_first",
                                  dtype="float64")
    y = layer(RNG.standard_normal((1, 2, 3, 4)))
    np.testing.assert_allclose(y.sum(axis=-1), 1.0)
    assert not np.allclose(y.sum(axis=1), 1.0)
    assert layer.activation is activations.softmax


def test_layer_takes_the_ops_numeric_padding_and_round_trips_it():
    """Beyond Keras: torch's padding convention, as the function takes it, against the
    reference; the config keeps it."""
    layer = tconv.Conv2DTranspose(3, 4, strides=2, padding=1, output_padding=1, dtype="float64")
    x = np.random.default_rng(3).standard_normal((2, 5, 4, 2))
    y = layer(x)
    kernel, bias = layer.get_weights()
    expected = reference.forward(x, kernel, bias, strides=(2, 2), padding=((1, 1), (1, 1)),
                                 output_padding=(1, 1))
    np.testing.assert_allclose(y, expected, rtol=1e-12, atol=1e-12)
    assert y.shape == (2, 11, 9, 3)   # (5 - 1)*2 + 4 - 2 + 1 by (4 - 1)*2 + 4 - 2 + 1
    clone = tconv.Conv2DTranspose.from_config(layer.get_config())
    assert clone.padding == ((1, 1), (1, 1)) and clone.compute_output_shape(x.shape) == y.shape
