"""Ranks 1 and 3 (Keras' Conv1DTranspose and Conv3DTranspose) from the user's call, against the
float64 reference (tests/reference.py, any rank): the functions on every namespace, forward and
gradients, both data formats; JAX under jit and grad; torch autograd, double backward and
compile; Dask; the layers and the torch modules; the errors. The Triton backend's items are in
tests/test_ranks_triton.py (its interpreter must be chosen before triton is imported)."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import reference
import tconv
from tconv._cpu import _backward

# (rank, x spatial, kernel size, in_channels, filters, options): every option on both ranks.
CASES = {
    "1d-s2-same": (1, (5,), (3,), 4, 6, dict(strides=2, padding="same")),
    "1d-s3-k4-valid-op2-g2": (1, (4,), (4,), 4, 6, dict(strides=3, output_padding=2, groups=2)),
    "1d-d2-same-op0": (1, (4,), (3,), 3, 2, dict(dilation_rate=2, padding="same",
                                                 output_padding=0)),
    "1d-s8-k16-hifigan": (1, (3,), (16,), 4, 2, dict(strides=8, padding="same")),
    "3d-s2-k2-unet": (3, (2, 3, 2), (2, 2, 2), 3, 4, dict(strides=2)),
    "3d-s212-same": (3, (3, 2, 4), (3, 2, 3), 4, 5, dict(strides=(2, 1, 2), padding="same")),
    "3d-d2-valid-op-g2": (3, (2, 3, 2), (2, 3, 2), 4, 6, dict(dilation_rate=(2, 1, 1), groups=2,
                                                            output_padding=(0, 0, 0))),
    # A 'same' kernel 2 shorter than its stride: TF's Conv3D gets dx wrong (tools/golden_ranks.py).
    "3d-k1-s3-same": (3, (2, 2, 2), (1, 2, 1), 2, 2, dict(strides=(3, 1, 3), padding="same")),
    "3d-s3-same-op-crop-depth": (3, (3, 2, 2), (3, 2, 2), 2, 3, dict(
        strides=(3, 2, 1), padding="same", output_padding=(1, 0, 0), dilation_rate=(1, 1, 2))),
    # torch's and tf.nn's conventions on every rank.
    "1d-s2-pad1-op1": (1, (5,), (4,), 3, 2, dict(strides=2, padding=1, output_padding=1)),
    "3d-explicit-crops": (3, (2, 3, 2), (3, 2, 3), 2, 3, dict(
        strides=(2, 1, 2), padding=((1, 0), (0, 1), (2, 1)))),
    "3d-output-shape": (3, (2, 3, 2), (3, 3, 3), 2, 2, dict(strides=2, padding="same",
                                                            output_shape=(3, 6, 4))),
}
DATA_FORMATS = ["channels_last", "channels_first"]


def _arrays(case, seed=0):
    rank, spatial, kernel_size, c, f, options = case
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((2, *spatial, c))
    kernel = rng.standard_normal((*kernel_size, f // options.get("groups", 1), c))
    return x, kernel, rng.standard_normal(f)


def _reference_padding(padding, rank):
    """Numeric padding as the reference's (before, after) crop per axis."""
    if isinstance(padding, str):
        return padding
    if isinstance(padding, int):
        return ((padding, padding),) * rank
    return tuple(p if isinstance(p, tuple) else (p, p) for p in padding)


def _reference_options(options, rank):
    return dict(strides=options.get("strides", 1),
                padding=_reference_padding(options.get("padding", "valid"), rank),
                output_padding=options.get("output_padding"),
                dilation=options.get("dilation_rate", 1), groups=options.get("groups", 1),
                output_shape=options.get("output_shape"))


def _to_format(a, data_format):
    """A channels-last array in ``data_format``."""
    return np.moveaxis(a, -1, 1) if data_format == "channels_first" else a


def _from_format(a, data_format):
    a = np.asarray(a)
    return np.moveaxis(a, 1, -1) if data_format == "channels_first" else a


@pytest.mark.parametrize("data_format", DATA_FORMATS)
@pytest.mark.parametrize("case", CASES.values(), ids=CASES.keys())
def test_forward_and_gradients_match_reference(xp, case, data_format):
    x, kernel, bias = _arrays(case)
    options = dict(case[-1], data_format=data_format, backend="cpu")
    y = tconv.conv_transpose(xp.asarray(_to_format(x, data_format)), xp.asarray(kernel),
                             xp.asarray(bias), **options)
    expected = reference.forward(x, kernel, bias, **_reference_options(case[-1], case[0]))
    assert type(y) is type(xp.asarray(x))
    np.testing.assert_allclose(_from_format(y, data_format), expected, rtol=1e-12, atol=1e-12)
    dy = np.random.default_rng(1).standard_normal(expected.shape)
    dx, dkernel, dbias = tconv.conv_transpose_backward(
        xp.asarray(_to_format(dy, data_format)), xp.asarray(_to_format(x, data_format)),
        xp.asarray(kernel), **options)
    ref_dx, ref_dkernel, ref_dbias = reference.backward(dy, x, kernel,
                                                        **_reference_options(case[-1], case[0]))
    np.testing.assert_allclose(_from_format(dx, data_format), ref_dx, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(np.asarray(dkernel), ref_dkernel, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(np.asarray(dbias), ref_dbias, rtol=1e-12, atol=1e-12)


@st.composite
def _geometries(draw):
    rank = draw(st.sampled_from([1, 3]))
    axis = st.tuples(st.integers(1, 4), st.integers(1, 4), st.integers(1, 3), st.integers(1, 3))
    axes = draw(st.lists(axis, min_size=rank, max_size=rank))   # (length, k, stride, dilation)
    output_padding = None
    if draw(st.booleans()):
        output_padding = tuple(draw(st.integers(0, s - 1)) for _, _, s, _ in axes)
    groups = draw(st.sampled_from([1, 2]))
    case = (rank, tuple(a[0] for a in axes), tuple(a[1] for a in axes), 2 * groups,
            draw(st.integers(1, 2)) * groups,
            dict(strides=tuple(a[2] for a in axes), dilation_rate=tuple(a[3] for a in axes),
                 padding=draw(st.sampled_from(["valid", "same"])),
                 output_padding=output_padding, groups=groups))
    return case, draw(st.sampled_from(DATA_FORMATS))


@given(_geometries())
def test_any_geometry_matches_reference_numpy(geometry):
    case, data_format = geometry
    x, kernel, bias = _arrays(case, seed=2)
    expected = reference.forward(x, kernel, bias, **_reference_options(case[-1], case[0]))
    if expected.size == 0:   # an output with no pixels: tconv refuses it
        with pytest.raises(ValueError, match="no pixels"):
            tconv.conv_transpose(_to_format(x, data_format), kernel, bias,
                                 data_format=data_format, **case[-1])
        return
    y = tconv.conv_transpose(_to_format(x, data_format), kernel, bias, data_format=data_format,
                             **case[-1])
    np.testing.assert_allclose(_from_format(y, data_format), expected, rtol=1e-12, atol=1e-12)
    dy = np.random.default_rng(3).standard_normal(expected.shape)
    grads = tconv.conv_transpose_backward(_to_format(dy, data_format), _to_format(x, data_format),
                                          kernel, data_format=data_format, **case[-1])
    ref = reference.backward(dy, x, kernel, **_reference_options(case[-1], case[0]))
    np.testing.assert_allclose(_from_format(grads[0], data_format), ref[0], atol=1e-12)
    np.testing.assert_allclose(grads[1], ref[1], atol=1e-12)
    np.testing.assert_allclose(grads[2], ref[2], atol=1e-12)


def test_named_forms_and_output_shapes_agree_with_conv_transpose():
    for rank, forward, backward, output_shape in (
            (1, tconv.conv1d_transpose, tconv.conv1d_transpose_backward,
             tconv.conv1d_transpose_output_shape),
            (3, tconv.conv3d_transpose, tconv.conv3d_transpose_backward,
             tconv.conv3d_transpose_output_shape)):
        case = next(c for c in CASES.values() if c[0] == rank)
        x, kernel, bias = _arrays(case)
        y = forward(x, kernel, bias, **case[-1])
        np.testing.assert_array_equal(y, tconv.conv_transpose(x, kernel, bias, **case[-1]))
        shape_options = {k: v for k, v in case[-1].items() if k != "groups"}
        assert output_shape((None, *x.shape[1:]), case[2], case[4], **shape_options) == \
            (None, *y.shape[1:])
        assert tconv.conv_transpose_output_shape(x.shape, case[2], case[4],
                                                 **shape_options) == y.shape
        for got, want in zip(backward(y, x, kernel, **case[-1]),
                             tconv.conv_transpose_backward(y, x, kernel, **case[-1])):
            np.testing.assert_array_equal(got, want)


def test_rank_errors_name_the_rule():
    with pytest.raises(ValueError, match="x must have rank 3, 4 or 5"):
        tconv.conv_transpose(np.zeros((1, 2, 2, 2, 2, 2)), np.zeros((1, 1, 1, 1, 1, 2)))
    with pytest.raises(ValueError, match=r"kernel must have rank 3 \(kernel_w"):
        tconv.conv_transpose(np.zeros((1, 4, 2)), np.zeros((1, 1, 1, 2)))
    with pytest.raises(ValueError, match=r"kernel must have rank 5 \(kernel_d"):
        tconv.conv3d_transpose(np.zeros((1, 2, 2, 2, 2)), np.zeros((1, 1, 1, 2)))
    with pytest.raises(ValueError, match=r"x must have rank 3 \(N, W, C\)"):
        tconv.conv1d_transpose(np.zeros((1, 2, 2, 2)), np.zeros((1, 1, 2)))
    with pytest.raises(ValueError, match=r"x must have rank 4"):
        tconv.conv2d_transpose(np.zeros((1, 2, 2)), np.zeros((1, 1, 1, 2)))
    with pytest.raises(ValueError, match="strides must be an int or a tuple of 3 ints"):
        tconv.conv3d_transpose(np.zeros((1, 2, 2, 2, 2)), np.zeros((1, 1, 1, 1, 2)),
                               strides=(1, 2))
    with pytest.raises(ValueError, match="input_shape must have rank 3, 4 or 5"):
        tconv.conv_transpose_output_shape((1, 2), 3, 2)
    with pytest.raises(TypeError, match="x must be an array"):
        tconv.conv_transpose([[[1.0]]], np.zeros((1, 1, 1)))


# --- frameworks -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def torch():
    return pytest.importorskip("torch", reason="torch is not installed")


# Tiny: gradcheck and gradgradcheck differentiate numerically, one call per element.
TINY_CASES = {
    "rank1": (1, (3,), (3,), 2, 2, dict(strides=2, padding="same", output_padding=1, groups=2)),
    "rank3": (3, (2, 2, 1), (2, 1, 2), 2, 1, dict(strides=(2, 1, 2), padding="same",
                                                  output_padding=(1, 0, 1))),
}


def _torch_leaves_and_forward(torch, case, data_format):
    """The case's arrays (NumPy) and as torch leaves in ``data_format``, and the user's call."""
    x, kernel, bias = _arrays(case, seed=4)
    inputs = tuple(torch.tensor(a, requires_grad=True)
                   for a in (_to_format(x, data_format), kernel, bias))

    def forward(x, kernel, bias):
        return tconv.conv_transpose(x, kernel, bias, data_format=data_format, **case[-1])

    return (x, kernel, bias), inputs, forward


@pytest.mark.parametrize("data_format", DATA_FORMATS)
@pytest.mark.parametrize("case", TINY_CASES.values(), ids=TINY_CASES.keys())
def test_torch_autograd_double_backward_and_compile(torch, case, data_format):
    (x, kernel, bias), inputs, forward = _torch_leaves_and_forward(torch, case, data_format)
    assert torch.autograd.gradcheck(forward, inputs)
    assert torch.autograd.gradgradcheck(forward, inputs)
    compiled = torch.compile(forward, fullgraph=True, backend="aot_eager")
    y = compiled(*inputs)
    expected = reference.forward(x, kernel, bias, **_reference_options(case[-1], case[0]))
    np.testing.assert_allclose(_from_format(y.detach().numpy(), data_format), expected,
                               rtol=1e-12, atol=1e-12)
    y.sum().backward()
    ref_dx, ref_dkernel, _ = reference.backward(np.ones(expected.shape), x, kernel,
                                                **_reference_options(case[-1], case[0]))
    np.testing.assert_allclose(_from_format(inputs[0].grad.numpy(), data_format), ref_dx,
                               rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(inputs[1].grad.numpy(), ref_dkernel, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("data_format", DATA_FORMATS)
@pytest.mark.parametrize("case", [CASES["1d-s8-k16-hifigan"], CASES["1d-s2-pad1-op1"]],
                         ids=["same", "crop-op"])
def test_torch_autograd_through_the_backward_by_shifts(torch, case, data_format, monkeypatch):
    """torch autograd from the user's call with the backward by shifts forced: gradcheck's
    finite differences, and the gradients of a random dy against the reference."""
    asked = []
    monkeypatch.setattr(_backward, "backward_by_shifts", lambda *args: asked.append(args) or True)
    (x, kernel, _), inputs, forward = _torch_leaves_and_forward(torch, case, data_format)
    assert torch.autograd.gradcheck(forward, inputs)
    options = _reference_options(case[-1], case[0])
    dy = np.random.default_rng(5).standard_normal(reference.forward(x, kernel, **options).shape)
    grads = torch.autograd.grad(forward(*inputs), inputs, torch.tensor(_to_format(dy, data_format)))
    expected = reference.backward(dy, x, kernel, **options)
    np.testing.assert_allclose(_from_format(grads[0].numpy(), data_format), expected[0],
                               rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(grads[1].numpy(), expected[1], rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(grads[2].numpy(), expected[2], rtol=1e-12, atol=1e-12)
    assert asked


@pytest.mark.parametrize("data_format", DATA_FORMATS)
@pytest.mark.parametrize("case", TINY_CASES.values(), ids=TINY_CASES.keys())
def test_torch_vmap_per_example_kernels_and_gradients(torch, case, data_format):
    """torch.func.vmap over per-example kernels (the examples folded into channel groups) and
    per-example kernel gradients, against the reference example by example."""
    examples = [_arrays(case, seed) for seed in range(3)]
    xs, kernels, biases = (torch.tensor(np.stack(a)) for a in zip(*examples))
    xs = xs.movedim(-1, 2) if data_format == "channels_first" else xs
    options = _reference_options(case[-1], case[0])

    def forward(x, kernel, bias):
        return tconv.conv_transpose(x, kernel, bias, data_format=data_format, **case[-1])

    ys = torch.func.vmap(forward)(xs, kernels, biases)
    dkernels = torch.func.vmap(torch.func.grad(lambda x, kernel: forward(x, kernel, None).sum(),
                                               argnums=1))(xs, kernels)
    for (x, kernel, bias), y, dkernel in zip(examples, ys, dkernels):
        expected = reference.forward(x, kernel, bias, **options)
        np.testing.assert_allclose(_from_format(y, data_format), expected, atol=1e-12)
        _, expected_dkernel, _ = reference.backward(np.ones(expected.shape), x, kernel, **options)
        np.testing.assert_allclose(dkernel.numpy(), expected_dkernel, atol=1e-12)


@pytest.mark.parametrize("case", [CASES["1d-d2-same-op0"], CASES["3d-s3-same-op-crop-depth"]],
                         ids=["rank1", "rank3"])
def test_jax_jit_and_grad(case):
    jax = pytest.importorskip("jax", reason="jax is not installed")
    jax.config.update("jax_enable_x64", True)
    x, kernel, bias = _arrays(case, seed=5)
    weights = np.random.default_rng(6).standard_normal(
        reference.forward(x, kernel, bias, **_reference_options(case[-1], case[0])).shape)

    def loss(x, kernel, bias):
        return jax.numpy.sum(tconv.conv_transpose(x, kernel, bias, **case[-1]) * weights)

    arrays = [jax.numpy.asarray(a) for a in (x, kernel, bias)]
    value, grads = jax.jit(jax.value_and_grad(loss, argnums=(0, 1, 2)))(*arrays)
    expected = reference.forward(x, kernel, bias, **_reference_options(case[-1], case[0]))
    np.testing.assert_allclose(float(value), np.sum(expected * weights), rtol=1e-12)
    ref_dx, ref_dkernel, ref_dbias = reference.backward(weights, x, kernel,
                                                        **_reference_options(case[-1], case[0]))
    for got, want in zip(grads, (ref_dx, ref_dkernel, ref_dbias)):
        np.testing.assert_allclose(np.asarray(got), want, rtol=1e-11, atol=1e-11)


@pytest.mark.parametrize("case, rule", [
    (CASES["1d-d2-same-op0"], "backward_by_cells"),
    (CASES["3d-s3-same-op-crop-depth"], "backward_by_cells"),
    (CASES["1d-s8-k16-hifigan"], "backward_by_shifts"),
    (CASES["1d-s2-pad1-op1"], "backward_by_shifts"),
], ids=["cells-rank1", "cells-rank3", "shifts-same", "shifts-crop-op"])
def test_jax_jit_and_grad_through_the_backward_by_cells_and_shifts(case, rule, monkeypatch):
    """The backward over cells and by shifts (forced) traced by ``jax.jit``, and differentiated
    by ``jax.grad``: ``dx`` is the forward's transpose applied to ``dy``, so the gradient of
    ``<dx, w>`` with respect to ``dy`` is the forward of ``w``."""
    jax = pytest.importorskip("jax", reason="jax is not installed")
    jax.config.update("jax_enable_x64", True)
    asked = []
    monkeypatch.setattr(_backward, rule, lambda *args: asked.append(args) or True)
    x, kernel, _ = _arrays(case, seed=5)
    options = _reference_options(case[-1], case[0])
    dy = np.random.default_rng(6).standard_normal(reference.forward(x, kernel, **options).shape)
    w = np.random.default_rng(7).standard_normal(x.shape)
    backward = jax.jit(lambda dy, x, kernel: tconv.conv_transpose_backward(dy, x, kernel,
                                                                          **case[-1]))
    grads = backward(*(jax.numpy.asarray(a) for a in (dy, x, kernel)))
    for got, want in zip(grads, reference.backward(dy, x, kernel, **options)):
        np.testing.assert_allclose(np.asarray(got), want, rtol=1e-11, atol=1e-11)
    d_dy = jax.grad(lambda dy: jax.numpy.sum(backward(dy, x, kernel)[0] * w))(
        jax.numpy.asarray(dy))
    np.testing.assert_allclose(np.asarray(d_dy), reference.forward(w, kernel, **options),
                               rtol=1e-11, atol=1e-11)
    assert asked


@pytest.mark.parametrize("data_format", DATA_FORMATS)
@pytest.mark.parametrize("case", [CASES["1d-s2-same"], CASES["3d-s2-k2-unet"]],
                         ids=["rank1", "rank3"])
def test_dask_batch_chunks(case, data_format):
    da = pytest.importorskip("dask.array", reason="dask is not installed")
    x, kernel, bias = _arrays(case, seed=7)
    x_in = _to_format(x, data_format)
    options = dict(case[-1], data_format=data_format)
    y = tconv.conv_transpose(da.from_array(x_in, chunks=1), da.from_array(kernel),
                             da.from_array(bias), **options)
    assert y.numblocks[0] == 2
    expected = reference.forward(x, kernel, bias, **_reference_options(case[-1], case[0]))
    np.testing.assert_allclose(_from_format(y.compute(), data_format), expected, atol=1e-12)
    dy = _to_format(np.ones(expected.shape), data_format)
    grads = tconv.conv_transpose_backward(da.from_array(dy, chunks=1),
                                          da.from_array(x_in, chunks=1), da.from_array(kernel),
                                          **options)
    ref = reference.backward(np.ones(expected.shape), x, kernel,
                             **_reference_options(case[-1], case[0]))
    np.testing.assert_allclose(_from_format(grads[0].compute(), data_format), ref[0], atol=1e-12)
    np.testing.assert_allclose(grads[1].compute(), ref[1], atol=1e-12)


# --- layers and modules -----------------------------------------------------------------------

LAYERS = {1: "Conv1DTranspose", 3: "Conv3DTranspose"}


@pytest.mark.parametrize("rank", [1, 3])
def test_layer_calls_the_op_and_round_trips_its_keras_config(rank):
    case = next(c for c in CASES.values() if c[0] == rank and "groups" not in c[-1])
    _, spatial, kernel_size, c, f, options = case
    layer_class = getattr(tconv, LAYERS[rank])
    layer = layer_class(f, kernel_size, activation="tanh", dtype="float64",
                        data_format="channels_first", **options)
    assert layer.name.startswith(f"conv{rank}d_transpose")
    x = np.random.default_rng(8).standard_normal((2, c, *spatial))
    y = layer(x)
    kernel, bias = layer.get_weights()
    assert kernel.shape == (*kernel_size, f, c)
    expected = np.tanh(reference.forward(np.moveaxis(x, 1, -1), kernel, bias,
                                         **_reference_options(options, rank)))
    np.testing.assert_allclose(np.moveaxis(y, 1, -1), expected, rtol=1e-12, atol=1e-12)
    assert layer.compute_output_shape((None, c, *spatial)) == (None, *y.shape[1:])
    config = layer.get_config()
    assert len(config["kernel_size"]) == len(config["strides"]) == rank
    clone = layer_class.from_config(config)
    assert clone.get_config() == config
    clone.build((None, c, *spatial))
    clone.set_weights(layer.get_weights())
    np.testing.assert_array_equal(clone(x), y)
    with pytest.raises(ValueError, match=f"inputs must have rank {rank + 2}"):
        layer(np.zeros((1, c, *spatial, 1)))


def test_layers_take_keras_configs():
    """A Keras 3 Conv1DTranspose config and a tf.keras 2 Conv3DTranspose config (its groups and
    batch_input_shape), as those versions write them."""
    keras3 = {"name": "up", "trainable": True, "dtype": {
        "module": "keras", "class_name": "DTypePolicy", "config": {"name": "float32"},
        "registered_name": None}, "filters": 8, "kernel_size": [16], "strides": [8],
        "padding": "same", "output_padding": None, "data_format": "channels_last",
        "dilation_rate": [1], "activation": "linear", "use_bias": True,
        "kernel_initializer": {"module": "keras.initializers", "class_name": "GlorotUniform",
                               "config": {"seed": None}, "registered_name": None},
        "bias_initializer": {"module": "keras.initializers", "class_name": "Zeros",
                             "config": {}, "registered_name": None},
        "kernel_regularizer": None, "bias_regularizer": None, "activity_regularizer": None,
        "kernel_constraint": None, "bias_constraint": None}
    layer = tconv.Conv1DTranspose.from_config(keras3)
    assert layer(np.zeros((1, 5, 3), np.float32)).shape == (1, 40, 8)
    tf_keras2 = {"name": "up3", "trainable": True, "batch_input_shape": [None, 4, 4, 4, 2],
                 "dtype": "float32", "filters": 3, "kernel_size": [2, 2, 2],
                 "strides": [2, 2, 2], "padding": "valid", "output_padding": None,
                 "data_format": "channels_last", "dilation_rate": [1, 1, 1], "groups": 1,
                 "activation": "relu", "use_bias": False,
                 "kernel_initializer": {"class_name": "GlorotUniform", "config": {"seed": None}},
                 "bias_initializer": {"class_name": "Zeros", "config": {}},
                 "kernel_regularizer": None, "bias_regularizer": None,
                 "activity_regularizer": None, "kernel_constraint": None,
                 "bias_constraint": None}
    layer = tconv.Conv3DTranspose.from_config(tf_keras2)
    assert layer.built and layer.get_weights()[0].shape == (2, 2, 2, 3, 2)
    assert layer.compute_output_shape((None, 4, 4, 4, 2)) == (None, 8, 8, 8, 3)


@pytest.mark.parametrize("rank", [1, 3])
def test_torch_module(torch, rank):
    case = next(c for c in CASES.values() if c[0] == rank and "groups" in c[-1])
    _, spatial, kernel_size, c, f, options = case
    module = getattr(tconv.torch, LAYERS[rank])(c, f, kernel_size, dtype=torch.float64,
                                                **options)
    assert module.kernel.shape == (*kernel_size, f // options["groups"], c)
    limit = np.sqrt(6 / (np.prod(kernel_size) * (f // options["groups"] + c)))
    assert 0 < module.kernel.abs().max().item() <= limit
    x = np.random.default_rng(9).standard_normal((2, c, *spatial))
    y = module(torch.tensor(x))
    expected = reference.forward(np.moveaxis(x, 1, -1), module.kernel.detach().numpy(),
                                 module.bias.detach().numpy(), **_reference_options(options, rank))
    np.testing.assert_allclose(np.moveaxis(y.detach().numpy(), 1, -1), expected, atol=1e-12)
    y.sum().backward()
    assert module.kernel.grad.shape == module.kernel.shape
    with pytest.raises(ValueError, match=f"takes inputs of rank {rank + 2}"):
        module(torch.zeros((1, c, 2, 2, 2, 2)[:rank + 1]))
