"""tconv.Conv2DTranspose against the real Keras 3 layer (golden "layer" cases of
tools/golden_layers.py): configs, Keras-initialized weights, output with every activation, losses
and constraints, for NumPy and torch inputs."""

import json

import numpy as np
import pytest
from golden_data import load_cases

import tconv
from helpers import to_numpy

CASES = load_cases("layer")




@pytest.fixture(params=["numpy", "torch"])
def to_xp(request):
    """NumPy array -> array of the namespace under test."""
    if request.param == "numpy":
        return np.array
    torch = pytest.importorskip("torch", reason="torch is not installed")
    return lambda array: torch.from_numpy(np.array(array))


def _tolerance(dtype):
    return dict(rtol=1e-10, atol=1e-12) if dtype == np.float64 else dict(rtol=2e-5, atol=2e-6)


def _weights(case):
    return [case.arrays[name] for name in ("kernel", "bias") if name in case.arrays]


def _layer(case, to_xp, **changes):
    layer = tconv.Conv2DTranspose.from_config({**case.params["keras3_config"], **changes})
    layer.build(case.arrays["x"].shape)
    layer.set_weights([to_xp(w) for w in _weights(case)])
    return layer


def test_there_are_layer_cases_with_every_activation():
    assert len(CASES) >= 4
    assert {"gelu", "softmax", "sparsemax", "glu", "selu", "hard_sigmoid"} <= set(
        CASES[0].params["activations"])


@pytest.mark.parametrize("case", CASES, ids=str)
def test_get_config_reproduces_keras3_config(case):
    config = case.params["keras3_config"]
    layer = tconv.Conv2DTranspose.from_config(config)
    assert json.loads(json.dumps(layer.get_config())) == config


@pytest.mark.parametrize("case", CASES, ids=str)
def test_keras_weights_load_unchanged(case, to_xp):
    layer = _layer(case, to_xp)
    for loaded, keras_weight in zip(layer.get_weights(), _weights(case), strict=True):
        assert loaded.dtype == keras_weight.dtype
        np.testing.assert_array_equal(loaded, keras_weight)
    assert type(layer.kernel) is type(to_xp(case.arrays["kernel"]))


@pytest.mark.parametrize("case", CASES, ids=str)
def test_output_with_every_activation(case, to_xp):
    x = case.arrays["x"]
    for name in case.params["activations"]:
        y = _layer(case, to_xp, activation=name)(to_xp(x))
        expected = case.arrays[f"y_{name}"]
        assert type(y) is type(to_xp(x)) and tuple(y.shape) == expected.shape, name
        np.testing.assert_allclose(to_numpy(y), expected, **_tolerance(expected.dtype),
                                   err_msg=f"activation {name}")


@pytest.mark.parametrize("case", CASES, ids=str)
def test_losses(case, to_xp):
    layer = _layer(case, to_xp)
    layer(to_xp(case.arrays["x"]))
    expected = [case.arrays[key] for key in ("loss_activity", "loss_kernel", "loss_bias")
                if key in case.arrays]
    losses = layer.losses
    assert len(losses) == len(expected)
    for loss, keras_loss in zip(losses, expected):
        assert tuple(loss.shape) == ()
        np.testing.assert_allclose(to_numpy(loss), keras_loss, rtol=2e-6)


@pytest.mark.parametrize("case", CASES, ids=str)
def test_constraints(case, to_xp):
    layer = _layer(case, to_xp)
    tolerance = _tolerance(case.arrays["kernel"].dtype)
    np.testing.assert_allclose(to_numpy(layer.kernel_constraint(layer.kernel)),
                               case.arrays["constrained_kernel"], **tolerance)
    layer.apply_constraints()
    expected = [case.arrays[key] for key in ("constrained_kernel", "constrained_bias")
                if key in case.arrays]
    if layer.bias is not None and "constrained_bias" not in case.arrays:
        expected.append(case.arrays["bias"])
    for constrained, keras_constrained in zip(layer.get_weights(), expected, strict=True):
        np.testing.assert_allclose(constrained, keras_constrained, **tolerance)


@pytest.mark.parametrize("case", CASES, ids=str)
def test_tf_keras_2_config(case, to_xp):
    config = case.params.get("tf_keras_config")
    if config is None:
        pytest.skip("the golden data was generated without tf-keras installed")
    layer = tconv.Conv2DTranspose.from_config(config)
    assert layer.built  # from batch_input_shape
    layer.set_weights([to_xp(w) for w in _weights(case)])
    y = layer(to_xp(case.arrays["x"]))
    expected = case.arrays[f"y_{config['activation']}"]
    np.testing.assert_allclose(to_numpy(y), expected, **_tolerance(expected.dtype))
    keras3 = case.params["keras3_config"]
    ours = layer.get_config()
    for key in ("filters", "kernel_size", "strides", "padding", "output_padding", "data_format",
                "dilation_rate", "activation", "use_bias", "name"):
        assert json.loads(json.dumps(ours[key])) == keras3[key], key
    # tf.keras 2 stores regularizer factors as float32: the same penalties to float32 precision.
    for loss, keras_loss in zip(layer.losses, [case.arrays[key] for key in
                                               ("loss_activity", "loss_kernel", "loss_bias")
                                               if key in case.arrays]):
        np.testing.assert_allclose(to_numpy(loss), keras_loss, rtol=1e-6)
