"""JAX as its users call it: parameters held as concrete arrays and captured by closures, mixed
with traced ones under ``jax.jit``, ``jax.grad`` (with respect to x, the kernel or the bias) and
``jax.vmap`` (over x alone, over x and the kernel); the layer under ``jax.jit``. Every result is
checked against tests/reference.py (float64, from the definition)."""

import numpy as np
import pytest
import reference

import tconv

jax = pytest.importorskip("jax", reason="jax is not installed")
jax.config.update("jax_enable_x64", True)
jnp = jax.numpy

# Grouped, dilated, strided, with an output_padding: every index path of the forward.
OPTIONS = dict(strides=2, dilation_rate=(1, 2), groups=2, output_padding=(1, 0), padding="valid",
               data_format="channels_last")
REFERENCE_OPTIONS = dict(strides=(2, 2), dilation=(1, 2), groups=2, output_padding=(1, 0),
                         padding="valid")
X_SHAPE, KERNEL_SHAPE, FILTERS = (2, 3, 4, 4), (2, 3, 1, 4), 2


def _arrays(seed):
    rng = np.random.default_rng(seed)
    return (rng.standard_normal(X_SHAPE), rng.standard_normal(KERNEL_SHAPE),
            rng.standard_normal(FILTERS))


def _forward(x, kernel, bias):
    return tconv.conv2d_transpose(x, kernel, bias, **OPTIONS)


def test_jit_of_a_closure_over_concrete_parameters():
    x, kernel, bias = _arrays(0)
    kernel_param, bias_param = jnp.asarray(kernel), jnp.asarray(bias)
    y = jax.jit(lambda x: _forward(x, kernel_param, bias_param))(jnp.asarray(x))
    np.testing.assert_allclose(np.asarray(y), reference.forward(x, kernel, bias,
                                                                **REFERENCE_OPTIONS),
                               rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("wrt", ["x", "kernel", "bias"])
def test_grad_with_respect_to_each_argument_the_others_captured(wrt):
    """The differentiated argument is traced, the other two are concrete closure constants."""
    x, kernel, bias = _arrays(1)
    weights = np.random.default_rng(2).standard_normal(
        reference.forward(x, kernel, bias, **REFERENCE_OPTIONS).shape)
    arrays = {"x": jnp.asarray(x), "kernel": jnp.asarray(kernel), "bias": jnp.asarray(bias)}

    def loss(value):
        y = _forward(**(arrays | {wrt: value}))
        return jnp.sum(y * weights)

    gradient = jax.grad(loss)(arrays[wrt])
    expected = dict(zip(("x", "kernel", "bias"),
                        reference.backward(weights, x, kernel, **REFERENCE_OPTIONS)))[wrt]
    np.testing.assert_allclose(np.asarray(gradient), expected, rtol=1e-11, atol=1e-11)


def test_vmap_over_x_with_captured_parameters():
    x, kernel, bias = _arrays(3)
    stacked = np.stack([x, 2 * x[::-1]])          # a vmapped axis in front of the batch
    ys = jax.vmap(lambda x: _forward(x, jnp.asarray(kernel), jnp.asarray(bias)))(
        jnp.asarray(stacked))
    for y, x_i in zip(ys, stacked):
        np.testing.assert_allclose(np.asarray(y), reference.forward(x_i, kernel, bias,
                                                                    **REFERENCE_OPTIONS),
                                   rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("jit", [False, True], ids=["eager", "jit"])
def test_vmap_over_x_and_kernel(jit):
    x, kernel, bias = _arrays(4)
    xs = np.stack([x, -x])
    kernels = np.stack([kernel, np.random.default_rng(5).standard_normal(KERNEL_SHAPE)])
    bias_param = jnp.asarray(bias)
    vmapped = jax.vmap(lambda x, kernel: _forward(x, kernel, bias_param))
    ys = (jax.jit(vmapped) if jit else vmapped)(jnp.asarray(xs), jnp.asarray(kernels))
    for y, x_i, kernel_i in zip(ys, xs, kernels):
        np.testing.assert_allclose(np.asarray(y), reference.forward(x_i, kernel_i, bias,
                                                                    **REFERENCE_OPTIONS),
                                   rtol=1e-12, atol=1e-12)


def test_jit_of_the_layer_on_jax_inputs():
    x = np.random.default_rng(6).standard_normal((2, 5, 4, 3))
    layer = tconv.Conv2DTranspose(4, 3, strides=2, padding="same", dtype="float64",
                                  data_format="channels_last",
                                  bias_initializer="random_normal")
    eager = layer(jnp.asarray(x))             # builds the layer: JAX weights on x's device
    jitted = jax.jit(layer)(jnp.asarray(x))
    assert isinstance(jitted, jax.Array)
    expected = reference.forward(x, np.asarray(layer.kernel), np.asarray(layer.bias),
                                 strides=(2, 2), padding="same")
    np.testing.assert_allclose(np.asarray(eager), expected, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(np.asarray(jitted), expected, rtol=1e-12, atol=1e-12)
