"""GPU arrays of every framework: torch CUDA tensors, CuPy arrays and JAX GPU arrays come back as
the caller's kind, on the caller's device, equal to the float64 reference. Each test skips without
its library or without a GPU, saying which. The CPU-side checks of the DLPack hand-over run
everywhere."""

import numpy as np
import pytest
import reference

import tconv
from tconv import _interop

OPTIONS = dict(strides=(2, 1), padding="same", dilation_rate=(1, 2), groups=2,
               data_format="channels_last")
REFERENCE_OPTIONS = dict(strides=(2, 1), padding="same", dilation=(1, 2), groups=2)


def _case(seed=0, dtype=np.float64):
    rng = np.random.default_rng(seed)
    return tuple(rng.standard_normal(shape).astype(dtype)
                 for shape in ((2, 5, 4, 4), (3, 2, 3, 4), (6,)))


# CuPy and JAX run in float32, the GPU's working precision; the hand-over is what is tested.
FLOAT32_TOLERANCE = dict(rtol=1e-4, atol=1e-4)
TF32_TOLERANCE = dict(rtol=1e-2, atol=1e-2)


def _torch_cuda():
    torch = pytest.importorskip("torch", reason="torch is not installed")
    if not torch.cuda.is_available():
        pytest.skip("no CUDA GPU visible to torch")
    return torch


def _cupy():
    cupy = pytest.importorskip("cupy", reason="cupy is not installed")
    try:
        cupy.cuda.runtime.getDeviceCount()
    except cupy.cuda.runtime.CUDARuntimeError:
        pytest.skip("cupy finds no CUDA GPU")
    _torch_cuda()  # the GPU backend runs on torch views
    return cupy


def _jax_gpu():
    jax = pytest.importorskip("jax", reason="jax is not installed")
    jax.config.update("jax_enable_x64", True)
    try:
        gpus = jax.devices("gpu")
    except RuntimeError:
        pytest.skip("jax has no GPU backend here")
    _torch_cuda()
    return jax, gpus[0]


@pytest.mark.parametrize("dtype, tolerance", [("float32", 1e-4), ("float64", 1e-10)])
def test_torch_cuda_in_torch_cuda_out(dtype, tolerance):
    torch = _torch_cuda()
    x, kernel, bias = _case()
    arrays = [torch.tensor(a, dtype=getattr(torch, dtype), device="cuda")
              for a in (x, kernel, bias)]
    y = tconv.conv2d_transpose(*arrays, **OPTIONS)
    assert y.device == arrays[0].device and y.dtype == arrays[0].dtype
    np.testing.assert_allclose(y.cpu().numpy(), reference.forward(x, kernel, bias,
                                                                  **REFERENCE_OPTIONS),
                               rtol=tolerance, atol=tolerance)


def test_torch_cuda_gradcheck_float64():
    torch = _torch_cuda()
    x, kernel, bias = _case(1)
    inputs = tuple(torch.tensor(a, device="cuda", requires_grad=True) for a in (x, kernel, bias))
    assert torch.autograd.gradcheck(
        lambda x, kernel, bias: tconv.conv2d_transpose(x, kernel, bias, **OPTIONS), inputs)


@pytest.mark.parametrize("backend", ["auto", "triton"])
def test_torch_cuda_compile_fullgraph_forward_and_backward(backend):
    """torch.compile (inductor, fullgraph) around the op on CUDA, forward and autograd backward,
    against the float64 reference: one opaque node per pass, the kernels inside."""
    torch = _torch_cuda()
    x, kernel, bias = _case(7, np.float32)

    def loss(x, kernel, bias):
        y = tconv.conv2d_transpose(x, kernel, bias, backend=backend, **OPTIONS)
        return (y * y).sum(), y

    compiled = torch.compile(loss, fullgraph=True)
    inputs = [torch.tensor(a, device="cuda", requires_grad=True) for a in (x, kernel, bias)]
    value, y = compiled(*inputs)
    value.backward()
    expected = reference.forward(x, kernel, bias, **REFERENCE_OPTIONS)
    np.testing.assert_allclose(y.detach().cpu().numpy(), expected, **FLOAT32_TOLERANCE)
    for got, want in zip((a.grad for a in inputs),
                         reference.backward(2 * expected, x, kernel, **REFERENCE_OPTIONS)):
        np.testing.assert_allclose(got.cpu().numpy(), want, rtol=1e-4, atol=1e-3)


def test_cupy_in_cupy_out_on_its_stream_with_reversed_views():
    cupy = _cupy()
    x, kernel, bias = _case(2, np.float32)
    expected = reference.forward(x[:, ::-1], kernel, bias, **REFERENCE_OPTIONS)
    stream = cupy.cuda.Stream(non_blocking=True)
    with stream:
        x_reversed = cupy.asarray(x)[:, ::-1]           # negative strides: exported densely
        y = tconv.conv2d_transpose(x_reversed, cupy.asarray(kernel), cupy.asarray(bias),
                                   **OPTIONS)
        dy = cupy.ones_like(y)
        grads = tconv.conv2d_transpose_backward(dy, x_reversed, cupy.asarray(kernel), **OPTIONS)
    stream.synchronize()
    assert isinstance(y, cupy.ndarray) and all(isinstance(g, cupy.ndarray) for g in grads)
    np.testing.assert_allclose(cupy.asnumpy(y), expected, **FLOAT32_TOLERANCE)
    expected_grads = reference.backward(np.ones(expected.shape), x[:, ::-1], kernel,
                                        **REFERENCE_OPTIONS)
    for got, want in zip(grads, expected_grads):
        np.testing.assert_allclose(cupy.asnumpy(got), want, **FLOAT32_TOLERANCE)


def test_cupy_on_the_null_stream():
    cupy = _cupy()
    x, kernel, bias = _case(3, np.float32)
    y = tconv.conv2d_transpose(*(cupy.asarray(a) for a in (x, kernel, bias)), **OPTIONS)
    assert isinstance(y, cupy.ndarray) and y.dtype == cupy.float32
    np.testing.assert_allclose(cupy.asnumpy(y), reference.forward(x, kernel, bias,
                                                                  **REFERENCE_OPTIONS),
                               **FLOAT32_TOLERANCE)


def test_jax_gpu_eager_and_jit_stay_on_the_gpu():
    jax, gpu = _jax_gpu()
    x, kernel, bias = _case(4, np.float32)
    arrays = [jax.device_put(a, gpu) for a in (x, kernel, bias)]
    assert _interop.is_foreign_gpu_array(arrays[0])
    expected = reference.forward(x, kernel, bias, **REFERENCE_OPTIONS)
    eager = tconv.conv2d_transpose(*arrays, **OPTIONS)  # the Triton kernels: IEEE float32
    # Under jit tconv's ops are XLA's, at JAX's matmul precision: its default multiplies float32
    # in TF32 on an H100 (seen: 2e-2 relative), as lax.conv_transpose does; "highest" is float32.
    jitted = jax.jit(lambda *a: tconv.conv2d_transpose(*a, **OPTIONS))(*arrays)
    with jax.default_matmul_precision("highest"):
        jitted_float32 = jax.jit(lambda *a: tconv.conv2d_transpose(*a, **OPTIONS))(*arrays)
    for y, tolerance in ((eager, FLOAT32_TOLERANCE), (jitted_float32, FLOAT32_TOLERANCE),
                         (jitted, TF32_TOLERANCE)):
        assert isinstance(y, jax.Array) and y.devices() == {gpu} and y.dtype == np.float32
        np.testing.assert_allclose(np.asarray(y), expected, **tolerance)


def test_host_arrays_and_jax_tracers_are_not_handed_over():
    jax = pytest.importorskip("jax", reason="jax is not installed")
    assert not _interop.is_foreign_gpu_array(np.ones(3))
    assert not _interop.is_foreign_gpu_array(jax.numpy.ones(3, device=jax.devices("cpu")[0]))
    seen = []
    jax.jit(lambda a: seen.append(_interop.is_foreign_gpu_array(a)) or a)(jax.numpy.ones(3))
    assert seen == [False]


def test_dlpack_hand_over_is_zero_copy_both_ways():
    """The conversion the GPU route uses, on host buffers (DLPack is device-agnostic)."""
    jax = pytest.importorskip("jax", reason="jax is not installed")
    pytest.importorskip("torch", reason="torch is not installed")
    array = jax.numpy.arange(12.0).reshape(3, 4)
    tensor = _interop._to_torch(array)
    assert tensor.data_ptr() == array.unsafe_buffer_pointer()
    back = _interop._from_torch(tensor, array)
    assert isinstance(back, jax.Array) and back.unsafe_buffer_pointer() == tensor.data_ptr()
    np.testing.assert_array_equal(np.asarray(back), np.asarray(array))


def test_gpu_route_round_trip_rehearsed_on_host(monkeypatch):
    """The GPU route end to end (DLPack out, backend on torch, DLPack back) with host JAX arrays,
    the CUDA device/stream switch replaced by a no-op: everything but the CUDA calls runs."""
    import contextlib

    jax = pytest.importorskip("jax", reason="jax is not installed")
    pytest.importorskip("torch", reason="torch is not installed")
    jax.config.update("jax_enable_x64", True)
    monkeypatch.setattr(_interop, "_on_callers_stream", lambda x: contextlib.nullcontext())
    x, kernel, bias = _case(5)
    spec = tconv.make_spec(x.shape, kernel.shape, backend="cpu", **OPTIONS)
    arrays = [jax.numpy.asarray(a) for a in (x, kernel, bias)]
    y = _interop.conv2d_transpose(*arrays, spec)
    assert isinstance(y, jax.Array)
    expected = reference.forward(x, kernel, bias, **REFERENCE_OPTIONS)
    np.testing.assert_allclose(np.asarray(y), expected, rtol=1e-12, atol=1e-12)
    dy = np.random.default_rng(6).standard_normal(expected.shape)
    grads = _interop.conv2d_transpose_backward(jax.numpy.asarray(dy), *arrays[:2], spec)
    for got, want in zip(grads, reference.backward(dy, x, kernel, **REFERENCE_OPTIONS)):
        assert isinstance(got, jax.Array)
        np.testing.assert_allclose(np.asarray(got), want, rtol=1e-12, atol=1e-12)
