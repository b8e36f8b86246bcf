"""Every framework first-class: the caller's kind of array out, on its device; torch autograd and
torch.compile through the custom op; JAX jit and grad; array-api-strict; Dask by batch chunks;
CuPy / JAX / torch GPU arrays (those skip without a GPU). References: tests/reference.py (float64,
from the definition) and torch's own autograd; nothing here was tuned to tconv."""

import json
import subprocess
import sys

import numpy as np
import pytest
import reference

import tconv
from helpers import reference_options

FRAMEWORKS = ("torch", "jax", "jaxlib", "cupy", "triton", "dask")

# (x shape NHWC, kernel shape, options): strides x dilation x groups x output_padding x 'same'.
CASES = [
    ((2, 3, 4, 2), (3, 2, 3, 2), dict(strides=(2, 1), padding="same")),
    ((1, 4, 3, 4), (2, 3, 1, 4), dict(strides=2, dilation_rate=(1, 2), groups=2,
                                      output_padding=(1, 0), padding="valid")),
]
CASE_IDS = ["strided-same", "grouped-dilated-output-padding"]


def _case(shapes, seed=0, groups=1):
    """x (NHWC), kernel and bias, standard normal; ``filters = kernel_shape[2] * groups``."""
    rng = np.random.default_rng(seed)
    x_shape, kernel_shape = shapes
    return (rng.standard_normal(x_shape), rng.standard_normal(kernel_shape),
            rng.standard_normal(kernel_shape[2] * groups))






def test_import_tconv_imports_no_framework():
    probe = ("import sys, json, tconv; print(json.dumps(["
             f"sorted(m for m in sys.modules if m.split('.')[0] in {FRAMEWORKS!r}),"
             " 'tconv.torch' in sys.modules]))")
    loaded, torch_module_loaded = json.loads(
        subprocess.run([sys.executable, "-c", probe], check=True, capture_output=True,
                       text=True).stdout)
    assert loaded == [] and not torch_module_loaded


def test_tconv_torch_is_a_lazy_submodule():
    pytest.importorskip("torch", reason="torch is not installed")
    probe = ("import sys, tconv; assert 'torch' not in sys.modules; "
             "layer = tconv.torch.Conv2DTranspose(2, 3, 2); print(type(layer).__module__)")
    out = subprocess.run([sys.executable, "-c", probe], check=True, capture_output=True,
                         text=True).stdout
    assert out.strip() == "tconv.torch"


def test_eager_torch_calls_import_no_compiler():
    """Dynamo (with sympy: 150 MB of RSS, 2 s) comes with torch.compile, never with an eager
    call: forward and backward, data_format=None (read as torch.compile keeps it constant); nor
    does torch.onnx (1.5 MB), which an eager call asks only whether an export is running."""
    pytest.importorskip("torch", reason="torch is not installed")
    probe = ("import sys, torch, tconv; x = torch.ones(1, 3, 3, 2, requires_grad=True); "
             "tconv.conv_transpose(x, torch.ones(2, 2, 3, 2), strides=2).sum().backward(); "
             "print(sorted({m.split('.')[0] + '.' + m.split('.')[1] for m in sys.modules "
             "if m.startswith(('torch._dynamo', 'torch._inductor', 'torch.onnx', 'sympy.'))}))")
    out = subprocess.run([sys.executable, "-c", probe], check=True, capture_output=True,
                         text=True).stdout
    assert out.strip() == "[]"


# ---------------------------------------------------------------------------------------- torch


@pytest.fixture(scope="module")
def torch():
    return pytest.importorskip("torch", reason="torch is not installed")


@pytest.mark.parametrize("shapes, options", [((c[0], c[1]), c[2]) for c in CASES], ids=CASE_IDS)
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_torch_in_torch_out_on_its_device(torch, shapes, options, dtype):
    x, kernel, bias = _case(shapes, groups=options.get("groups", 1))
    tdtype = getattr(torch, dtype)
    y = tconv.conv2d_transpose(torch.tensor(x, dtype=tdtype), torch.tensor(kernel, dtype=tdtype),
                               torch.tensor(bias, dtype=tdtype), data_format="channels_last",
                               **options)
    assert isinstance(y, torch.Tensor) and y.dtype == tdtype and y.device.type == "cpu"
    expected = reference.forward(x, kernel, bias, **reference_options(options))
    tolerance = 1e-5 if dtype == "float32" else 1e-12
    np.testing.assert_allclose(y.numpy(), expected, rtol=tolerance, atol=tolerance)


@pytest.mark.parametrize("data_format", ["channels_last", "channels_first"])
@pytest.mark.parametrize("shapes, options", [((c[0], c[1]), c[2]) for c in CASES], ids=CASE_IDS)
def test_torch_gradcheck_float64(torch, shapes, options, data_format):
    x, kernel, bias = _case(shapes, seed=1, groups=options.get("groups", 1))
    if data_format == "channels_first":
        x = x.transpose(0, 3, 1, 2)
    inputs = tuple(torch.tensor(a, requires_grad=True) for a in (x, kernel, bias))

    assert torch.autograd.gradcheck(
        lambda x, kernel, bias: tconv.conv2d_transpose(x, kernel, bias, data_format=data_format,
                                                       **options), inputs)


def test_torch_double_backward_gradgradcheck_float64(torch):
    """Gradient penalties differentiate the backward: its own autograd formula is checked here."""
    x_shape, kernel_shape, options = (1, 3, 2, 4), (2, 3, 1, 4), dict(
        strides=(2, 1), dilation_rate=(1, 2), groups=2, output_padding=(1, 0), padding="same")
    x, kernel, bias = _case((x_shape, kernel_shape), seed=15, groups=options["groups"])
    inputs = tuple(torch.tensor(a, requires_grad=True) for a in (x, kernel, bias))
    assert torch.autograd.gradgradcheck(
        lambda x, kernel, bias: tconv.conv2d_transpose(x, kernel, bias,
                                                       data_format="channels_last", **options),
        inputs)


def test_torch_gradients_match_reference_and_skip_absent_bias(torch):
    (x_shape, kernel_shape, options) = CASES[1]
    x, kernel, _ = _case((x_shape, kernel_shape), seed=2, groups=options.get("groups", 1))
    xt, kt = (torch.tensor(a, requires_grad=True) for a in (x, kernel))
    y = tconv.conv2d_transpose(xt, kt, data_format="channels_last", **options)
    dy = np.random.default_rng(3).standard_normal(tuple(y.shape))
    y.backward(torch.tensor(dy))
    dx, dkernel, _ = reference.backward(dy, x, kernel, **reference_options(options))
    np.testing.assert_allclose(xt.grad.numpy(), dx, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(kt.grad.numpy(), dkernel, rtol=1e-12, atol=1e-12)
    # The explicit backward on torch tensors returns torch tensors, dbias included.
    grads = tconv.conv2d_transpose_backward(torch.tensor(dy), xt.detach(), kt.detach(),
                                            data_format="channels_last", **options)
    assert all(isinstance(g, torch.Tensor) for g in grads)
    np.testing.assert_allclose(grads[2].numpy(), dy.sum(axis=(0, 1, 2)), rtol=1e-12)


def test_torch_calls_not_differentiated_skip_the_autograd_function(torch, monkeypatch):
    """No grad wanted (no_grad, or no input requiring it): the op alone, the same values; a
    leaf requiring grad still goes through the Function and gets its gradient."""
    from tconv import _torch_op

    (x_shape, kernel_shape, options) = CASES[1]
    x, kernel, bias = (torch.tensor(a) for a in _case((x_shape, kernel_shape), seed=5,
                                                        groups=options.get("groups", 1)))
    dy = torch.ones(tuple(tconv.conv2d_transpose(x, kernel, data_format="channels_last",
                                                 **options).shape), dtype=x.dtype)
    expected = (tconv.conv2d_transpose(x, kernel, data_format="channels_last", **options),
                tconv.conv2d_transpose_backward(dy, x, kernel, data_format="channels_last",
                                                **options))

    def refuse(*args):
        raise AssertionError("the autograd.Function ran for a call nothing differentiates")

    with monkeypatch.context() as patch:
        for function in (_torch_op._ConvTranspose, _torch_op._ConvTransposeBackward):
            patch.setattr(function, "apply", refuse)
        leaf = kernel.clone().requires_grad_(True)
        with torch.no_grad():
            y = tconv.conv2d_transpose(x, leaf, data_format="channels_last", **options)
            grads = tconv.conv2d_transpose_backward(dy, x, leaf, data_format="channels_last",
                                                    **options)
        assert y.grad_fn is None and torch.equal(y, expected[0])
        assert all(torch.equal(g, e) for g, e in zip(grads, expected[1]))
        with pytest.raises(AssertionError, match="autograd.Function ran"):
            tconv.conv2d_transpose(x, leaf, data_format="channels_last", **options)
    y = tconv.conv2d_transpose(x, leaf, data_format="channels_last", **options)
    y.backward(dy)
    assert torch.equal(leaf.grad, expected[1][1])


def test_torch_opcheck_fake_schema_and_autograd_registration(torch):
    from tconv import _torch_op

    x, kernel, bias = _case((CASES[0][0], CASES[0][1]), seed=4)
    args = (torch.tensor(x, requires_grad=True), torch.tensor(kernel, requires_grad=True),
            torch.tensor(bias, requires_grad=True), [2, 1], "same", None, "channels_last", [1, 1],
            1, "auto", None, None)
    torch.library.opcheck(_torch_op.conv2d_transpose_op, args)
    dy = torch.randn(2, 6, 4, 3, dtype=torch.float64, requires_grad=True)
    torch.library.opcheck(_torch_op.conv2d_transpose_backward_op, (dy,) + args[:2] + args[3:])


def test_torch_compile_fullgraph_forward_and_backward(torch):
    """aot_eager traces forward and backward through the fake impls: a graph break or a fake/real
    mismatch fails here, at a fraction of inductor's compile time."""
    x_shape, kernel_shape, options = CASES[1]
    x, kernel, bias = _case((x_shape, kernel_shape), seed=5, groups=options.get("groups", 1))

    def loss(x, kernel, bias):
        y = tconv.conv2d_transpose(x, kernel, bias, data_format="channels_last", **options)
        return (y * y).sum()

    compiled = torch.compile(loss, fullgraph=True, backend="aot_eager")
    results = []
    for function in (loss, compiled):
        inputs = [torch.tensor(a, requires_grad=True) for a in (x, kernel, bias)]
        value = function(*inputs)
        value.backward()
        results.append([value.detach()] + [a.grad for a in inputs])
    for eager, traced in zip(*results):
        torch.testing.assert_close(traced, eager, rtol=1e-12, atol=1e-12)


def test_torch_compile_inductor_module(torch):
    """One real inductor compile of the module, channels_first, float32."""
    import tconv.torch as tconv_torch

    torch.manual_seed(0)
    layer = tconv_torch.Conv2DTranspose(4, 6, 3, strides=2, padding="same", groups=2)
    x = torch.randn(2, 4, 5, 5)
    compiled = torch.compile(layer, fullgraph=True)
    torch.testing.assert_close(compiled(x), layer(x))


# ------------------------------------------------------------------------------------------ JAX


@pytest.fixture(scope="module")
def jax():
    jax = pytest.importorskip("jax", reason="jax is not installed")
    jax.config.update("jax_enable_x64", True)
    return jax


@pytest.mark.parametrize("shapes, options", [((c[0], c[1]), c[2]) for c in CASES], ids=CASE_IDS)
def test_jax_in_jax_out_eager_and_jit(jax, shapes, options):
    x, kernel, bias = _case(shapes, seed=6, groups=options.get("groups", 1))
    arrays = [jax.numpy.asarray(a) for a in (x, kernel, bias)]

    def forward(x, kernel, bias):
        return tconv.conv2d_transpose(x, kernel, bias, data_format="channels_last", **options)

    eager = forward(*arrays)
    jitted = jax.jit(forward)(*arrays)
    assert isinstance(eager, jax.Array) and isinstance(jitted, jax.Array)
    assert eager.devices() == arrays[0].devices()
    expected = reference.forward(x, kernel, bias, **reference_options(options))
    np.testing.assert_allclose(np.asarray(eager), expected, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(np.asarray(jitted), expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("shapes, options", [((c[0], c[1]), c[2]) for c in CASES], ids=CASE_IDS)
def test_jax_grad_matches_torch_autograd(jax, torch, shapes, options):
    """jax.grad differentiates the array-API forward; torch autograd runs tconv's backward op:
    two independent derivations of the same gradients."""
    x, kernel, bias = _case(shapes, seed=7, groups=options.get("groups", 1))
    weights = np.random.default_rng(8).standard_normal(
        reference.forward(x, kernel, bias, **reference_options(options)).shape)

    def jax_loss(x, kernel, bias):
        y = tconv.conv2d_transpose(x, kernel, bias, data_format="channels_last", **options)
        return jax.numpy.sum(y * weights)

    jax_grads = jax.jit(jax.grad(jax_loss, argnums=(0, 1, 2)))(
        *(jax.numpy.asarray(a) for a in (x, kernel, bias)))
    torch_inputs = [torch.tensor(a, requires_grad=True) for a in (x, kernel, bias)]
    y = tconv.conv2d_transpose(*torch_inputs, data_format="channels_last", **options)
    (y * torch.tensor(weights)).sum().backward()
    for from_jax, torch_input in zip(jax_grads, torch_inputs):
        np.testing.assert_allclose(np.asarray(from_jax), torch_input.grad.numpy(), rtol=1e-11,
                                   atol=1e-11)


# ------------------------------------------------------------------------------ array-api-strict


def test_array_api_strict_in_strict_out():
    xp = pytest.importorskip("array_api_strict", reason="array-api-strict is not installed")
    x_shape, kernel_shape, options = CASES[1]
    x, kernel, bias = _case((x_shape, kernel_shape), seed=9, groups=options.get("groups", 1))
    y = tconv.conv2d_transpose(xp.asarray(x), xp.asarray(kernel), xp.asarray(bias),
                               data_format="channels_last", **options)
    assert type(y) is type(xp.asarray(x))
    expected = reference.forward(x, kernel, bias, **reference_options(options))
    np.testing.assert_allclose(np.asarray(y), expected, rtol=1e-12, atol=1e-12)
    dy = xp.asarray(np.random.default_rng(10).standard_normal(expected.shape))
    grads = tconv.conv2d_transpose_backward(dy, xp.asarray(x), xp.asarray(kernel),
                                            data_format="channels_last", **options)
    assert all(type(g) is type(dy) for g in grads)


# ----------------------------------------------------------------------------------------- Dask


@pytest.fixture(scope="module")
def da():
    return pytest.importorskip("dask.array", reason="dask is not installed")


def test_dask_is_lazy_with_one_task_per_batch_chunk(da):
    x_shape, kernel_shape, options = (6, 3, 4, 2), (3, 2, 3, 2), dict(strides=2, padding="same")
    x, kernel, bias = _case((x_shape, kernel_shape), seed=11, groups=options.get("groups", 1))
    computed_blocks = []

    def counted(block):
        computed_blocks.append(block.shape)
        return block

    x_lazy = da.from_array(x, chunks=(2, -1, -1, -1)).map_blocks(counted, meta=np.empty((0,) * 4))
    y = tconv.conv2d_transpose(x_lazy, da.from_array(kernel), da.from_array(bias),
                               data_format="channels_last", **options)
    assert isinstance(y, da.Array) and computed_blocks == []
    assert y.numblocks == (3, 1, 1, 1) and y.chunks[0] == (2, 2, 2)
    expected = reference.forward(x, kernel, bias, **reference_options(options))
    np.testing.assert_allclose(y.compute(), expected, rtol=1e-12, atol=1e-12)
    assert len(computed_blocks) == 3


@pytest.mark.parametrize("data_format", ["channels_last", "channels_first"])
def test_dask_other_chunkings_are_rechunked_along_batch(da, data_format):
    x_shape, kernel_shape, options = CASES[1]
    x, kernel, bias = _case(((5,) + x_shape[1:], kernel_shape), seed=12,
                             groups=options.get("groups", 1))
    expected = reference.forward(x, kernel, bias, **reference_options(options))
    x_in = x.transpose(0, 3, 1, 2) if data_format == "channels_first" else x
    # Chunked along every axis, the kernel too: the route must regroup whole images.
    y = tconv.conv2d_transpose(da.from_array(x_in, chunks=2), da.from_array(kernel, chunks=1),
                               da.from_array(bias, chunks=1), data_format=data_format, **options)
    assert y.numblocks == (3, 1, 1, 1)
    result = y.compute()
    if data_format == "channels_first":
        result = result.transpose(0, 2, 3, 1)
    np.testing.assert_allclose(result, expected, rtol=1e-12, atol=1e-12)


def test_dask_without_bias_and_backward_equal_reference(da):
    x_shape, kernel_shape, options = CASES[1]
    x, kernel, _ = _case(((5,) + x_shape[1:], kernel_shape), seed=13,
                             groups=options.get("groups", 1))
    expected = reference.forward(x, kernel, **reference_options(options))
    y = tconv.conv2d_transpose(da.from_array(x, chunks=(2, -1, -1, -1)), da.from_array(kernel),
                               data_format="channels_last", **options)
    np.testing.assert_allclose(y.compute(), expected, rtol=1e-12, atol=1e-12)
    dy = np.random.default_rng(14).standard_normal(expected.shape)
    grads = tconv.conv2d_transpose_backward(
        da.from_array(dy, chunks=(2, -1, 3, -1)), da.from_array(x, chunks=(2, -1, -1, -1)),
        da.from_array(kernel), data_format="channels_last", **options)
    assert all(isinstance(g, da.Array) for g in grads)
    assert grads[0].numblocks == (3, 1, 1, 1)
    for got, expected in zip(grads, reference.backward(dy, x, kernel,
                                                       **reference_options(options))):
        np.testing.assert_allclose(got.compute(), expected, rtol=1e-12, atol=1e-12)


def test_dask_bad_options_raise_before_compute(da):
    x = da.zeros((2, 3, 3, 2), chunks=1)
    with pytest.raises(ValueError, match="backend"):
        tconv.conv2d_transpose(x, da.zeros((2, 2, 1, 2)), data_format="channels_last",
                               backend="gpu")
    with pytest.raises(ValueError, match="output_padding"):
        tconv.conv2d_transpose(x, da.zeros((2, 2, 1, 2)), data_format="channels_last",
                               output_padding=1)


# ---------------------------------------------------------------------------------------- NumPy


def test_numpy_big_endian_x_with_native_kernel_gives_x_dtype():
    """Same kind and size, another byte order: one float dtype to tconv, computed natively."""
    x_shape, kernel_shape, options = CASES[1]
    x, kernel, bias = _case((x_shape, kernel_shape), seed=16, groups=options.get("groups", 1))
    x_big_endian = x.astype(">f4")
    y = tconv.conv2d_transpose(x_big_endian, kernel.astype(np.float32), bias.astype(np.float32),
                               data_format="channels_last", **options)
    assert y.dtype == np.dtype(">f4")
    expected = reference.forward(x_big_endian, kernel.astype(np.float32),
                                 bias.astype(np.float32), **reference_options(options))
    np.testing.assert_allclose(y, expected, rtol=1e-5, atol=1e-5)
