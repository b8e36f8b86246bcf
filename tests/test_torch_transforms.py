"""torch as its users call it: ``torch.export`` with dynamic sizes, ``torch.compile(dynamic=True)``,
``torch.func`` (grad, vjp, jacrev, vmap), ``torch.compile(fullgraph=True)`` without warnings, and
the ``channels_last`` memory format. References: tests/reference.py (float64, from the definition),
torch's own ``F.conv_transpose2d`` and torch's own autograd."""

import contextlib
import warnings

import pytest
import reference

import tconv

torch = pytest.importorskip("torch", reason="torch is not installed")
import tconv.torch as tconv_torch  # noqa: E402

F = torch.nn.functional
# Strided, dilated, grouped, 'same' with an odd overhang (TF crops more at the bottom/right).
OPTIONS = dict(strides=2, padding="same", dilation_rate=(1, 2), groups=2,
               data_format="channels_first")
REFERENCE_OPTIONS = dict(strides=(2, 2), padding="same", dilation=(1, 2), groups=2)


def _layer(**dtype):
    torch.manual_seed(0)
    layer = tconv_torch.Conv2DTranspose(4, 6, 3, strides=2, padding="same", **dtype)
    with torch.no_grad():
        layer.bias.normal_()
    return layer


def _arrays(seed, batch=2):
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, 4, 5, 3, dtype=torch.float64, generator=generator)
    kernel = torch.randn(3, 3, 3, 4, dtype=torch.float64, generator=generator)
    bias = torch.randn(6, dtype=torch.float64, generator=generator)
    return x, kernel, bias


def _forward(x, kernel, bias):
    return tconv.conv2d_transpose(x, kernel, bias, **OPTIONS)


def _reference(x, kernel, bias=None):
    """tests/reference.py on channels_first torch tensors."""
    y = reference.forward(x.detach().permute(0, 2, 3, 1).numpy(), kernel.detach().numpy(),
                          None if bias is None else bias.detach().numpy(), **REFERENCE_OPTIONS)
    return torch.from_numpy(y).permute(0, 3, 1, 2)


# ------------------------------------------------------------------------------ dynamic shapes


def test_export_with_dynamic_batch_height_width_saves_loads_and_matches_eager(tmp_path):
    from torch.export import Dim

    layer = _layer()
    example = torch.randn(2, 4, 5, 6)
    exported = torch.export.export(
        layer, (example,),
        dynamic_shapes=({0: Dim("batch"), 2: Dim("height"), 3: Dim("width")},))
    path = tmp_path / "conv2d_transpose.pt2"
    torch.export.save(exported, path)
    loaded = torch.export.load(path).module()
    for shape in [(3, 4, 7, 4), (5, 4, 2, 9)]:
        x = torch.randn(shape)
        torch.testing.assert_close(loaded(x), layer(x))


def test_compile_dynamic_builds_one_graph_across_batch_sizes():
    graphs = []

    def counting_backend(graph_module, example_inputs):
        graphs.append(graph_module)
        return graph_module.forward

    layer = _layer()
    torch._dynamo.reset()
    compiled = torch.compile(layer, backend=counting_backend, dynamic=True)
    for batch in (2, 3, 4, 5):
        x = torch.randn(batch, 4, 5, 6)
        torch.testing.assert_close(compiled(x), layer(x))
    assert len(graphs) == 1


# ---------------------------------------------------------------------------------- torch.func


def test_func_grad_with_respect_to_every_argument():
    x, kernel, bias = _arrays(1)
    weights = torch.randn(_reference(x, kernel).shape, dtype=torch.float64)
    grads = torch.func.grad(lambda *arrays: (_forward(*arrays) * weights).sum(),
                            argnums=(0, 1, 2))(x, kernel, bias)
    dx, dkernel, dbias = reference.backward(weights.permute(0, 2, 3, 1).numpy(),
                                            x.permute(0, 2, 3, 1).numpy(), kernel.numpy(),
                                            **REFERENCE_OPTIONS)
    for got, expected in zip(grads, (torch.from_numpy(dx).permute(0, 3, 1, 2),
                                     torch.from_numpy(dkernel), torch.from_numpy(dbias))):
        torch.testing.assert_close(got, expected, rtol=1e-11, atol=1e-11)


def test_func_vjp_and_jacrev_match_torch_autograd():
    x, kernel, bias = _arrays(2, batch=1)
    x = x[:, :, :2, :2]
    y, vjp = torch.func.vjp(_forward, x, kernel, bias)
    dy = torch.randn_like(y)
    inputs = [a.clone().requires_grad_() for a in (x, kernel, bias)]
    expected = torch.autograd.grad(_forward(*inputs), inputs, dy)
    for got, wanted in zip(vjp(dy), expected):
        torch.testing.assert_close(got, wanted, rtol=1e-12, atol=1e-12)
    jacobian = torch.func.jacrev(_forward, argnums=1)(x, kernel, bias)
    expected_jacobian = torch.autograd.functional.jacobian(lambda k: _forward(x, k, bias), kernel)
    torch.testing.assert_close(jacobian, expected_jacobian, rtol=1e-12, atol=1e-12)


@contextlib.contextmanager
def _no_vmap_fallback():
    """vmap raises for an op without a batching rule instead of looping over the examples."""
    torch._C._functorch._set_vmap_fallback_enabled(False)
    try:
        yield
    finally:
        torch._C._functorch._set_vmap_fallback_enabled(True)


def test_func_vmap_has_batching_rules_forward_and_per_example_gradients():
    x, kernel, bias = _arrays(3)
    xs = torch.stack([x, 2 * x.flip(0), -x])
    kernels = torch.stack([kernel, -kernel, kernel.flip(0)])
    with _no_vmap_fallback():
        over_x = torch.func.vmap(_forward, in_dims=(0, None, None))(xs, kernel, bias)
        over_x_and_kernel = torch.func.vmap(_forward, in_dims=(0, 0, None))(xs, kernels, bias)
        # Per-example gradients: vmap of grad, the backward op batched over x and dy.
        per_example = torch.func.vmap(
            torch.func.grad(lambda x, kernel: _forward(x, kernel, bias).square().sum(),
                            argnums=1), in_dims=(0, None))(xs, kernel)
    for i in range(len(xs)):
        torch.testing.assert_close(over_x[i], _reference(xs[i], kernel, bias))
        torch.testing.assert_close(over_x_and_kernel[i], _reference(xs[i], kernels[i], bias))
        kernel_i = kernel.clone().requires_grad_()
        expected, = torch.autograd.grad(_forward(xs[i], kernel_i, bias).square().sum(), kernel_i)
        torch.testing.assert_close(per_example[i], expected)


# ------------------------------------------------------------------------------- torch.compile


def _compile_warnings(convolution):
    """The warnings of one torch.compile(fullgraph=True) of a forward+backward step."""
    torch._dynamo.reset()
    x, kernel, bias = (a.float().requires_grad_() for a in _arrays(4))

    def step(x, kernel, bias):
        return convolution(x, kernel, bias).square().sum()

    compiled = torch.compile(step, fullgraph=True, backend="aot_eager")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        compiled(x, kernel, bias).backward()
    return [f"{w.filename}:{w.lineno}: {w.message}" for w in caught]


def test_compile_fullgraph_warns_no_more_than_torch_conv_transpose2d():
    with_torch = _compile_warnings(
        lambda x, kernel, bias: F.conv_transpose2d(x, kernel.permute(3, 2, 0, 1), bias,
                                                   stride=2, dilation=(1, 2), groups=2))
    with_tconv = _compile_warnings(_forward)
    assert len(with_tconv) <= len(with_torch), with_tconv


# ------------------------------------------------------------------------------- memory format


@pytest.mark.parametrize("rank", [2, 3])
def test_channels_last_in_channels_last_out_forward_and_gradients(rank):
    """Eager, compiled (inductor, fullgraph) and exported calls on a channels_last input give
    torch's conv_transpose values (float64) and its layouts: the output's and dx's strides of its
    float32 call (its float64 3-D call falls back to a kernel that returns contiguous results)."""
    memory_format = {2: torch.channels_last, 3: torch.channels_last_3d}[rank]
    torch.manual_seed(0)
    layer = getattr(tconv_torch, f"Conv{rank}DTranspose")(4, 6, 3, strides=2,
                                                          dtype=torch.float64)
    convolution = getattr(F, f"conv_transpose{rank}d")
    x = torch.randn(2, 4, *(3, 5, 4)[-rank:], dtype=torch.float64).to(memory_format=memory_format)

    def forward_and_gradients(call, x, weight, bias):
        x = x.clone(memory_format=torch.preserve_format).requires_grad_()
        y = call(x, weight, bias)
        dy = torch.arange(y.numel(), dtype=y.dtype).reshape(y.shape).sin()
        return (y, *torch.autograd.grad(y, (x, weight), dy))

    torch_weight = layer.kernel.detach().movedim((-1, -2), (0, 1)).requires_grad_()
    expected = forward_and_gradients(lambda x, w, b: convolution(x, w, b, stride=2), x,
                                     torch_weight, layer.bias.detach())
    layouts = [t.stride() for t in forward_and_gradients(
        lambda x, w, b: convolution(x, w, b, stride=2), x.float(), torch_weight.float(),
        layer.bias.detach().float())[:2]]
    torch._dynamo.reset()
    exported = torch.export.export(layer, (x,)).module()
    for call in (layer, torch.compile(layer, fullgraph=True), exported):
        y, dx, dkernel = forward_and_gradients(lambda x, w, b: call(x), x, layer.kernel, None)
        assert [y.stride(), dx.stride()] == layouts
        for got, want in zip((y, dx, dkernel.movedim((-1, -2), (0, 1))), expected):
            torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)


def test_compile_fullgraph_of_an_inference_call_with_keras_configured_data_format(
        tmp_path, monkeypatch):
    """No input requires grad (Dynamo inlines the forward) and data_format=None (read from
    keras.json, a file Dynamo cannot trace): one graph still, with the configured format."""
    (tmp_path / "keras.json").write_text('{"image_data_format": "channels_first"}')
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    x, kernel, _ = _arrays(5)
    torch._dynamo.reset()
    compiled = torch.compile(lambda x: tconv.conv2d_transpose(x, kernel, strides=2),
                             fullgraph=True, backend="aot_eager")
    expected = reference.forward(x.permute(0, 2, 3, 1).numpy(), kernel.numpy(), strides=(2, 2))
    torch.testing.assert_close(compiled(x), torch.from_numpy(expected).permute(0, 3, 1, 2),
                               rtol=1e-12, atol=1e-12)
