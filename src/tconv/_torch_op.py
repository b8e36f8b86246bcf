"""``tconv.conv2d_transpose`` for torch tensors: a ``torch.library`` custom op pair behind an
``autograd.Function``.

The forward op and the backward op are opaque to torch: ``register_fake`` gives ``torch.compile``
and ``torch.export`` their output shapes (from the spec, as everywhere; symbolic sizes stay
symbolic, so one graph serves every batch and image size), and ``register_vmap`` gives
``torch.func.vmap`` a batching rule (the vmapped axis folded into the batch, or into the channels
as extra groups when the kernel is vmapped too), so no transform loops over examples.

Autograd is wired twice with the same functions: ``register_autograd`` on each op (the ops stand
complete on their own) and the ``autograd.Function`` pair that the front end calls, because the
``autograd.Function`` that ``register_autograd`` generates has no ``setup_context`` and
``torch.func`` (grad, vjp, jacrev) refuses such functions (pytorch/pytorch#168393). The backward's
own gradient is the double backward (gradient penalties, gradgradcheck).

Custom ops take simple arguments only, so the spec travels as its options and is rebuilt inside.
The backward selects its backend from the same ``backend`` option and the same device as the
forward did, hence it runs where the forward ran. Results keep the memory format of ``x``
(``channels_last`` or ``channels_last_3d`` in, the same out) as torch's convolutions do.

Under ``torch.onnx.export`` the forward is emitted as one standard ONNX ``ConvTranspose`` node
(Keras' asymmetric crop as its ``pads``), not as an opaque custom op that no runtime knows.

Imported by the dispatcher only when the caller's arrays are torch tensors.
"""

from __future__ import annotations

import sys
from typing import Optional

import torch

from ._backends import select_backend
from ._options import keras_image_data_format
from ._spec import ConvTransposeSpec, make_spec

# The custom ops' option arguments, in their order: the spec's options (ints, lists, strings).
# Custom ops take no nested lists: numeric padding travels flat as ``crops`` (before, after,
# before, after...), ``padding`` then being "explicit".
_OPTION_NAMES = ("strides", "padding", "output_padding", "data_format", "dilation_rate", "groups",
                 "backend", "output_shape", "crops")


def configured_data_format() -> str:
    """Keras' configured ``image_data_format``. It is read from a file, which Dynamo cannot trace
    (``open`` breaks the graph): torch.compile calls this eagerly and keeps the result."""
    return keras_image_data_format()


# What torch.compiler.assume_constant_result(configured_data_format) does, without the import of
# Dynamo it begins with: eager callers would pay 150 MB of RSS and 2 s on their first call.
configured_data_format._dynamo_marked_constant = True


def _op_options(spec: ConvTransposeSpec) -> list:
    keywords = spec.options.keywords()
    numeric = not isinstance(spec.padding, str)
    keywords["padding"] = "explicit" if numeric else spec.padding
    keywords["crops"] = [v for pair in spec.padding for v in pair] if numeric else None
    return [list(keywords[name]) if isinstance(keywords[name], tuple) else keywords[name]
            for name in _OPTION_NAMES]


def _rebuild_spec(x, kernel, strides, padding, output_padding, data_format, dilation_rate,
                  groups, backend, output_shape, crops) -> ConvTransposeSpec:
    if padding == "explicit":
        padding = tuple(zip(crops[::2], crops[1::2]))
    return make_spec(x.shape, kernel.shape, strides=strides, padding=padding,
                     output_padding=output_padding, data_format=data_format,
                     dilation_rate=dilation_rate, groups=groups, backend=backend,
                     output_shape=output_shape)


def _memory_format(x: torch.Tensor) -> torch.memory_format:
    """torch's choice for a convolution's output: ``channels_last`` (``channels_last_3d`` for a
    volume) when ``x`` is laid out so (and not also plainly contiguous, as a one-pixel or
    one-channel image can be)."""
    channels_last = {4: torch.channels_last, 5: torch.channels_last_3d}.get(x.dim())
    if channels_last is not None and not x.is_contiguous() and x.is_contiguous(
            memory_format=channels_last):
        return channels_last
    return torch.contiguous_format


def _empty(shape, like: torch.Tensor, memory_format=torch.contiguous_format) -> torch.Tensor:
    return torch.empty(shape, dtype=like.dtype, device=like.device, memory_format=memory_format)


# --------------------------------------------------------------------------------- the ops


# The results' layouts follow x's strides, so inductor must hand the ops the strides their fakes
# saw: its default for custom ops, made explicit whatever a caller configures.
_EXACT_STRIDES = (torch.Tag.needs_exact_strides,)


def _custom_op(name: str):
    """What ``torch.library.custom_op(f"tconv::{name}", mutates_args=())`` makes of the function
    it decorates (the schema from its annotations), as an ``OpOverload``. Through
    ``torch.library.define`` and ``impl``: ``custom_op`` wraps its kernels in
    ``torch._disable_dynamo``, whose first call imports Dynamo (with sympy: 150 MB of RSS and 2 s
    in an eager caller's process); compiled graphs already run with Dynamo disabled."""
    def define(kernel):
        qualname = f"tconv::{name}"
        torch.library.define(qualname, torch.library.infer_schema(kernel, mutates_args=()),
                             tags=_EXACT_STRIDES)
        torch.library.impl(qualname, "default", kernel)
        return getattr(torch.ops.tconv, name).default
    return define


@_custom_op("conv2d_transpose")
def conv2d_transpose_op(x: torch.Tensor, kernel: torch.Tensor, bias: Optional[torch.Tensor],
                        strides: list[int], padding: str, output_padding: Optional[list[int]],
                        data_format: str, dilation_rate: list[int], groups: int,
                        backend: str, output_shape: Optional[list[int]],
                        crops: Optional[list[int]]) -> torch.Tensor:
    spec = _rebuild_spec(x, kernel, strides, padding, output_padding, data_format, dilation_rate,
                         groups, backend, output_shape, crops)
    y = select_backend(backend, x).conv2d_transpose(x, kernel, bias, spec)
    # The real output must have the strides the fake one promised to compile.
    return y.contiguous(memory_format=_memory_format(x))


@torch.library.register_fake(conv2d_transpose_op)
def _(x, kernel, bias, *options):
    return _empty(_rebuild_spec(x, kernel, *options).output_shape, x, _memory_format(x))


@_custom_op("conv2d_transpose_backward")
def conv2d_transpose_backward_op(dy: torch.Tensor, x: torch.Tensor, kernel: torch.Tensor,
                                 strides: list[int], padding: str,
                                 output_padding: Optional[list[int]], data_format: str,
                                 dilation_rate: list[int], groups: int, backend: str,
                                 output_shape: Optional[list[int]], crops: Optional[list[int]],
                                 ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    spec = _rebuild_spec(x, kernel, strides, padding, output_padding, data_format, dilation_rate,
                         groups, backend, output_shape, crops)
    dx, dkernel, dbias = select_backend(backend, x).conv2d_transpose_backward(dy, x, kernel, spec)
    return dx.contiguous(memory_format=_memory_format(x)), dkernel.contiguous(), dbias.contiguous()


@torch.library.register_fake(conv2d_transpose_backward_op)
def _(dy, x, kernel, *options):
    spec = _rebuild_spec(x, kernel, *options)
    return (_empty(x.shape, x, _memory_format(x)), _empty(kernel.shape, kernel),
            _empty((spec.filters,), x))


# -------------------------------------------------------------------------------- autograd


def _setup_context(ctx, inputs, output):
    x, kernel, bias, *options = inputs
    ctx.save_for_backward(x, kernel)
    ctx.options = options
    ctx.has_bias = bias is not None


def _backward(ctx, dy):
    x, kernel = ctx.saved_tensors
    # torch.func needs the autograd.Function (its grad transforms always build the backward's
    # graph); Dynamo cannot trace an autograd.Function applied inside another's backward, and
    # takes the op, whose registered autograd serves the same formula.
    backward = (conv2d_transpose_backward_op if torch.compiler.is_compiling()
                else _ConvTransposeBackward.apply)
    dx, dkernel, dbias = backward(dy, x, kernel, *ctx.options)
    # One gradient per forward input: tensors first, then None for each option.
    return (dx, dkernel, dbias if ctx.has_bias else None) + (None,) * len(_OPTION_NAMES)


def _setup_backward_context(ctx, inputs, output):
    dy, x, kernel, *options = inputs
    ctx.save_for_backward(dy, x, kernel)
    ctx.options = options


def _backward_of_backward(ctx, grad_dx, grad_dkernel, grad_dbias):
    """Double backward. With F the forward, linear in x and in the kernel: <dx, a> = <dy, F(a,
    kernel)>, <dkernel, b> = <dy, F(x, b)>, <dbias, c> = <dy, c broadcast>; each gradient below
    is one of those pairings differentiated."""
    dy, x, kernel = ctx.saved_tensors
    options = ctx.options
    grad_dy = (_ConvTranspose.apply(grad_dx, kernel, grad_dbias, *options)
               + _ConvTranspose.apply(x, grad_dkernel, None, *options))
    grad_x = _ConvTransposeBackward.apply(dy, x, grad_dkernel, *options)[0]
    grad_kernel = _ConvTransposeBackward.apply(dy, grad_dx, kernel, *options)[1]
    return (grad_dy, grad_x, grad_kernel) + (None,) * len(_OPTION_NAMES)


class _ConvTranspose(torch.autograd.Function):
    """The forward op for autograd and ``torch.func``; under vmap its parts run batched, the ops
    through their batching rules."""

    generate_vmap_rule = True
    setup_context = staticmethod(_setup_context)
    backward = staticmethod(_backward)

    # Named parameters: Dynamo counts them to tell a setup_context-style forward from one that
    # takes ctx.
    @staticmethod
    def forward(x, kernel, bias, strides, padding, output_padding, data_format, dilation_rate,
                groups, backend, output_shape, crops):
        return conv2d_transpose_op(x, kernel, bias, strides, padding, output_padding, data_format,
                                   dilation_rate, groups, backend, output_shape, crops)


class _ConvTransposeBackward(torch.autograd.Function):
    generate_vmap_rule = True
    setup_context = staticmethod(_setup_backward_context)
    backward = staticmethod(_backward_of_backward)

    @staticmethod
    def forward(dy, x, kernel, strides, padding, output_padding, data_format, dilation_rate,
                groups, backend, output_shape, crops):
        return conv2d_transpose_backward_op(dy, x, kernel, strides, padding, output_padding,
                                            data_format, dilation_rate, groups, backend,
                                            output_shape, crops)


torch.library.register_autograd(conv2d_transpose_op, _backward, setup_context=_setup_context)
torch.library.register_autograd(conv2d_transpose_backward_op, _backward_of_backward,
                                setup_context=_setup_backward_context)


# ------------------------------------------------------------------------------------ vmap


def _fold_into_channels(tensor, in_dim, batch_size, channel_axis):
    """A vmapped (per-example shape + the vmapped axis at ``in_dim``) tensor as one tensor whose
    channel axis holds the examples' channels one after the other (example-major)."""
    if in_dim is None:
        tensor = tensor.unsqueeze(channel_axis).expand(
            *tensor.shape[:channel_axis], batch_size, *tensor.shape[channel_axis:])
    else:
        tensor = tensor.movedim(in_dim, channel_axis)
    return tensor.flatten(channel_axis, channel_axis + 1)


def _unfold_from_channels(tensor, batch_size, channel_axis):
    return tensor.unflatten(channel_axis, (batch_size, -1)).movedim(channel_axis, 0)


def _channel_axes(data_format: str, rank: int) -> tuple[int, int]:
    """The channel axes of one example's ``x`` (``y``, ``dy``) and of a kernel ``(*taps, Fg,
    Cin)``, with ``rank`` spatial axes."""
    return (rank + 1 if data_format == "channels_last" else 1), rank + 1


def _forward_vmap(info, in_dims, x, kernel, bias, strides, padding, output_padding, data_format,
                  dilation_rate, groups, backend, output_shape, crops):
    options = (strides, padding, output_padding, data_format, dilation_rate)
    tail = (backend, output_shape, crops)
    x_dim, kernel_dim, bias_dim = in_dims[:3]
    size = info.batch_size
    if kernel_dim is None and bias_dim is None:
        # Shared parameters: the examples are more images of one batch.
        y = conv2d_transpose_op(x.movedim(x_dim, 0).flatten(0, 1), kernel, bias, *options, groups,
                                *tail)
        return y.unflatten(0, (size, -1)), 0
    # Per-example parameters: example b is channel group b of one grouped convolution (its
    # channels, kernel and bias side by side), so one call still does all the examples.
    axis, kernel_axis = _channel_axes(data_format, len(strides))
    if bias is not None:
        bias = _fold_into_channels(bias, bias_dim, size, 0)
    y = conv2d_transpose_op(_fold_into_channels(x, x_dim, size, axis),
                            _fold_into_channels(kernel, kernel_dim, size, kernel_axis), bias,
                            *options, groups * size, *tail)
    return _unfold_from_channels(y, size, axis), 0


def _backward_vmap(info, in_dims, dy, x, kernel, strides, padding, output_padding, data_format,
                   dilation_rate, groups, backend, output_shape, crops):
    # dkernel and dbias are per example whenever dy or x is: always the grouped form.
    options = (strides, padding, output_padding, data_format, dilation_rate)
    tail = (backend, output_shape, crops)
    size = info.batch_size
    axis, kernel_axis = _channel_axes(data_format, len(strides))
    dy_dim, x_dim, kernel_dim = in_dims[:3]
    dx, dkernel, dbias = conv2d_transpose_backward_op(
        _fold_into_channels(dy, dy_dim, size, axis), _fold_into_channels(x, x_dim, size, axis),
        _fold_into_channels(kernel, kernel_dim, size, kernel_axis), *options, groups * size, *tail)
    return ((_unfold_from_channels(dx, size, axis),
             _unfold_from_channels(dkernel, size, kernel_axis),
             _unfold_from_channels(dbias, size, 0)), (0, 0, 0))


torch.library.register_vmap(conv2d_transpose_op, _forward_vmap)
torch.library.register_vmap(conv2d_transpose_backward_op, _backward_vmap)


# ------------------------------------------------------------------------------------ ONNX


def _onnx_conv_transpose(x, kernel, bias, spec: ConvTransposeSpec):
    """The forward as one ONNX ``ConvTranspose``. Its weight is torch's layout (in_channels,
    filters // groups, kh, kw); Keras' crop of the full convolution is ``pads`` (TF crops the odd
    pixel at the end), and an output longer than the full convolution is ``output_padding``."""
    channels_first = spec.data_format == "channels_first"
    x_nchw = x if channels_first else x.permute(0, 3, 1, 2)
    pads_begin, pads_end, output_padding = [], [], []
    for length, k, s, d, out, before in zip(spec.in_spatial, spec.kernel_size, spec.strides,
                                             spec.dilation_rate, spec.out_spatial,
                                             spec.pad_before):
        full = (length - 1) * s + (k - 1) * d + 1
        extra = max(0, out + before - full)
        # Attributes are ints. The crop depends on the kernel, stride, dilation and padding only,
        # so with a symbolic length (dynamic shapes) these simplify to constants: int() adds no
        # guard.
        pads_begin.append(int(before))
        pads_end.append(int(full + extra - out - before))
        output_padding.append(int(extra))
    y = torch.onnx.ops.symbolic(
        "ConvTranspose", (x_nchw, kernel.permute(3, 2, 0, 1), bias),
        dict(kernel_shape=list(spec.kernel_size), strides=list(spec.strides),
             dilations=list(spec.dilation_rate), group=spec.groups, pads=pads_begin + pads_end,
             output_padding=output_padding),
        dtype=x.dtype, shape=(spec.batch, spec.filters, *spec.out_spatial))
    return y if channels_first else y.permute(0, 2, 3, 1)


# ------------------------------------------------------------------------------- the route


def _in_onnx_export() -> bool:
    """``torch.onnx.is_in_onnx_export()`` without importing ``torch.onnx`` in an eager caller's
    process (1.5 MB of RSS on the first call): an export has imported it. Traced code asks torch
    itself, which Dynamo folds to a constant."""
    if torch.compiler.is_compiling():
        return torch.onnx.is_in_onnx_export()
    onnx = sys.modules.get("torch.onnx")
    return onnx is not None and onnx.is_in_onnx_export()


def _differentiated(*tensors) -> bool:
    """Whether autograd or a ``torch.func`` transform may differentiate through a call, which the
    ``autograd.Function`` is for; otherwise the op runs alone: ``Function.apply`` binds its
    arguments through ``inspect.signature`` on every call, about a tenth of a millisecond."""
    return (torch._C._are_functorch_transforms_active()
            or (torch.is_grad_enabled()
                and any(t is not None and t.requires_grad for t in tensors)))


def conv2d_transpose(x, kernel, bias, spec: ConvTransposeSpec):
    """The forward on torch tensors: differentiable, traceable, exportable."""
    if _in_onnx_export():
        return _onnx_conv_transpose(x, kernel, bias, spec)
    run = _ConvTranspose.apply if _differentiated(x, kernel, bias) else conv2d_transpose_op
    return run(x, kernel, bias, *_op_options(spec))


def conv2d_transpose_backward(dy, x, kernel, spec: ConvTransposeSpec):
    """The explicit backward on torch tensors, differentiable and traceable."""
    run = (_ConvTransposeBackward.apply if _differentiated(dy, x, kernel)
           else conv2d_transpose_backward_op)
    return run(dy, x, kernel, *_op_options(spec))
