"""CuPy and JAX GPU arrays on the GPU backend, through zero-copy torch views (DLPack).

The GPU kernels launch on torch tensors. A CuPy array, or a concrete (eager) JAX array on a GPU,
is viewed as a torch tensor by DLPack, the backend runs on it, and the result is handed back the
same way, so the caller gets its own kind of array on its own device and nothing is copied.

Streams: CuPy work is ordered by CuPy's current stream, so the kernels launch on that very stream
(``torch.cuda.ExternalStream``) and need no synchronization. The null stream is the exception: its
handle is 0, which ``ExternalStream`` refuses, and it is also torch's default stream, so nothing
needs to change for it. JAX orders the hand-over itself: DLPack passes the consumer's stream to
``__dlpack__``.

A JAX tracer (inside ``jax.jit`` / ``jax.grad``) has no buffer to share; those calls stay on the
array-API path, which XLA compiles for the GPU.
"""

from __future__ import annotations

import contextlib

import array_api_compat

from ._backends import select_backend


def is_foreign_gpu_array(x) -> bool:
    """A CuPy array, or a concrete JAX array on one GPU."""
    if array_api_compat.is_cupy_array(x):
        return True
    if array_api_compat.is_jax_array(x):
        import jax

        if isinstance(x, jax.core.Tracer):
            return False
        # A sharded array has no single buffer to view; XLA runs the array-API path on it.
        devices = x.devices()
        return len(devices) == 1 and next(iter(devices)).platform == "gpu"
    return False


def _to_torch(array):
    import torch

    if array is None:
        return None
    if array_api_compat.is_cupy_array(array) and any(stride < 0 for stride in array.strides):
        import cupy

        # torch.from_dlpack aborts on negative strides (a reversed view): export a dense copy.
        array = cupy.ascontiguousarray(array)
    return torch.from_dlpack(array)


def _from_torch(tensor, like):
    if array_api_compat.is_cupy_array(like):
        import cupy

        return cupy.from_dlpack(tensor)
    import jax.numpy as jnp

    return jnp.from_dlpack(tensor)


def _torch_device(x):
    import torch

    if array_api_compat.is_cupy_array(x):
        return torch.device("cuda", x.device.id)
    (device,) = x.devices()
    return torch.device("cuda", device.local_hardware_id)


@contextlib.contextmanager
def _on_callers_stream(x):
    """torch's current device set to ``x``'s and, for CuPy, its current stream to CuPy's."""
    import torch

    torch_device = _torch_device(x)
    with contextlib.ExitStack() as stack:
        stack.enter_context(torch.cuda.device(torch_device))
        if array_api_compat.is_cupy_array(x):
            import cupy

            stream = cupy.cuda.get_current_stream()
            if stream.ptr != 0:
                stack.enter_context(torch.cuda.stream(
                    torch.cuda.ExternalStream(stream.ptr, device=torch_device)))
        yield


def conv2d_transpose(x, kernel, bias, spec):
    with _on_callers_stream(x):
        x_torch, kernel_torch, bias_torch = (_to_torch(a) for a in (x, kernel, bias))
        y = select_backend(spec.backend, x_torch).conv2d_transpose(x_torch, kernel_torch,
                                                                   bias_torch, spec)
        return _from_torch(y, x)


def conv2d_transpose_backward(dy, x, kernel, spec):
    with _on_callers_stream(x):
        dy_torch, x_torch, kernel_torch = (_to_torch(a) for a in (dy, x, kernel))
        gradients = select_backend(spec.backend, x_torch).conv2d_transpose_backward(
            dy_torch, x_torch, kernel_torch, spec)
        return tuple(_from_torch(g, x) for g in gradients)
