"""The two example networks, seeded, and their translation to TensorFlow.

The networks themselves are defined in ``mlp_net.py`` and ``cnn_net.py``, the model files the
TorchServe archives carry (Python 3.8, torch 2.0 APIs: they run in the official TorchServe
image). Both are ``nn.Sequential`` stacks so that :func:`to_tensorflow` can rebuild the same
computation in TensorFlow layer by layer from the PyTorch weights: this is how the TF Serving
versions of the examples carry *exactly* the weights of their TorchServe twins.

- ``mlp``: ``x`` float32 [batch, 4] -> ``probabilities`` float32 [batch, 3] (softmax).
- ``cnn``: ``x`` float32 [batch, 3, 32, 32] (NCHW) -> ``logits`` float32 [batch, 10].

TensorFlow is imported lazily, so importing this module only needs torch.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from examples.cnn_net import CNNNet
from examples.mlp_net import MLPNet

if TYPE_CHECKING:
    import tensorflow as tf

MLP_INPUT_SHAPE = (4,)
CNN_INPUT_SHAPE = (3, 32, 32)


def build_mlp(seed: int) -> nn.Sequential:
    """Return the ``mlp`` network (:class:`MLPNet`), initialised from ``seed``, in eval mode."""
    with _seeded(seed):
        return MLPNet().eval()


def build_cnn(seed: int) -> nn.Sequential:
    """Return the ``cnn`` network (:class:`CNNNet`), initialised from ``seed``, in eval mode.

    About 24.5 MFLOPs per example (see :func:`count_flops`), about 0.5 ms of CPU on the 2-core
    development machine: real work per example for the backend, still cheap enough for CI.
    """
    with _seeded(seed):
        return CNNNet().eval()


@contextlib.contextmanager
def _seeded(seed: int) -> Iterator[None]:
    # Seed torch's global RNG for layer initialisation without disturbing the caller's RNG state.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


def count_flops(module: nn.Module, input_shape: Sequence[int]) -> int:
    """Count the multiply-add FLOPs (2 per MAC) of one example through ``module``.

    Only convolutions and linear layers are counted; activations and pooling are negligible.
    """
    flops = 0

    def hook(layer: nn.Module, _inputs: Any, output: torch.Tensor) -> None:
        nonlocal flops
        if isinstance(layer, nn.Conv2d):
            kh, kw = layer.kernel_size
            macs_per_output = (layer.in_channels // layer.groups) * kh * kw
            flops += 2 * macs_per_output * output[0].numel()
        elif isinstance(layer, nn.Linear):
            flops += 2 * layer.in_features * layer.out_features

    handles = [m.register_forward_hook(hook) for m in module.modules()]
    try:
        with torch.inference_mode():
            module(torch.zeros(1, *input_shape))
    finally:
        for handle in handles:
            handle.remove()
    return flops


def to_tensorflow(
    module: nn.Sequential,
    input_shape: Sequence[int],
    input_name: str = "x",
    output_name: str = "y",
) -> tf.Module:
    """Build a ``tf.Module`` computing the same function as ``module``, with its weights.

    The returned module has a ``serve`` ``tf.function`` taking ``input_name`` (float32, shape
    ``[None, *input_shape]``, PyTorch layout) and returning ``{output_name: tensor}``; save it
    with ``tf.saved_model.save(m, path, signatures={"serving_default": m.serve})``.

    TensorFlow's CPU kernels only implement NHWC convolutions and pooling, so 4-D activations are
    transposed to NHWC on the way in and back to NCHW before a flatten or at the output. Only
    the layer types used by the examples are supported.
    """
    import tensorflow as tf

    variables: list[tf.Variable] = []
    ops: list[Callable[[tf.Tensor, bool], tuple[tf.Tensor, bool]]] = []

    def const(t: torch.Tensor, name: str) -> tf.Variable:
        v = tf.Variable(t.detach().cpu().numpy(), trainable=False, name=name)
        variables.append(v)
        return v

    # Each op maps (tensor, is_nhwc) -> (tensor, is_nhwc); the flag tracks the current layout.
    for i, layer in enumerate(module):
        if isinstance(layer, nn.Linear):
            if layer.bias is None:
                raise NotImplementedError("Linear without bias is not supported")
            w = const(layer.weight.T, f"dense{i}_kernel")  # [out, in] -> [in, out]
            b = const(layer.bias, f"dense{i}_bias")

            def dense(x: tf.Tensor, nhwc: bool, w: tf.Variable = w, b: tf.Variable = b) -> Any:
                return tf.matmul(x, w) + b, nhwc

            ops.append(dense)
        elif isinstance(layer, nn.ReLU):

            def relu(x: tf.Tensor, nhwc: bool) -> Any:
                return tf.nn.relu(x), nhwc

            ops.append(relu)
        elif isinstance(layer, nn.Conv2d):
            if (
                layer.groups != 1
                or _pair(layer.dilation) != (1, 1)
                or isinstance(layer.padding, str)
                or layer.padding_mode != "zeros"
                or layer.bias is None
            ):
                raise NotImplementedError(f"unsupported Conv2d options: {layer}")
            k = const(layer.weight.permute(2, 3, 1, 0), f"conv{i}_kernel")  # -> [kh, kw, in, out]
            b = const(layer.bias, f"conv{i}_bias")
            ph, pw = layer.padding
            strides = [1, *_pair(layer.stride), 1]
            # Explicit padding rather than "SAME": TF's SAME pads asymmetrically for even
            # kernels or strides > 1, PyTorch always pads symmetrically.
            pad = [[0, 0], [ph, ph], [pw, pw], [0, 0]]

            def conv(
                x: tf.Tensor,
                nhwc: bool,
                k: tf.Variable = k,
                b: tf.Variable = b,
                strides: list[int] = strides,
                pad: list[list[int]] = pad,
            ) -> Any:
                x = x if nhwc else tf.transpose(x, [0, 2, 3, 1])
                return tf.nn.conv2d(x, k, strides=strides, padding=pad) + b, True

            ops.append(conv)
        elif isinstance(layer, nn.MaxPool2d):
            kernel, stride = _pair(layer.kernel_size), _pair(layer.stride or layer.kernel_size)
            if _pair(layer.padding) != (0, 0) or layer.ceil_mode or _pair(layer.dilation) != (1, 1):
                raise NotImplementedError(f"unsupported MaxPool2d options: {layer}")

            def pool(
                x: tf.Tensor,
                nhwc: bool,
                kernel: tuple[int, int] = kernel,
                stride: tuple[int, int] = stride,
            ) -> Any:
                x = x if nhwc else tf.transpose(x, [0, 2, 3, 1])
                return tf.nn.max_pool2d(x, list(kernel), list(stride), padding="VALID"), True

            ops.append(pool)
        elif isinstance(layer, nn.AdaptiveAvgPool2d):
            if _pair(layer.output_size) != (1, 1):
                raise NotImplementedError("only AdaptiveAvgPool2d(1) is supported")

            def global_avg_pool(x: tf.Tensor, nhwc: bool) -> Any:
                return tf.reduce_mean(x, axis=[1, 2] if nhwc else [2, 3], keepdims=True), nhwc

            ops.append(global_avg_pool)
        elif isinstance(layer, nn.Flatten):
            if layer.start_dim != 1 or layer.end_dim != -1:
                raise NotImplementedError("only Flatten() over all non-batch dims is supported")

            def flatten(x: tf.Tensor, nhwc: bool) -> Any:
                # PyTorch flattens in (C, H, W) order; go back to NCHW first.
                x = tf.transpose(x, [0, 3, 1, 2]) if nhwc else x
                return tf.reshape(x, [tf.shape(x)[0], -1]), False

            ops.append(flatten)
        elif isinstance(layer, nn.Softmax):
            unsupported = "only Softmax over dim 1 of a 2-D tensor is supported"
            if layer.dim not in (1, -1):
                raise NotImplementedError(unsupported)

            def softmax(x: tf.Tensor, nhwc: bool, unsupported: str = unsupported) -> Any:
                if x.shape.rank != 2:  # checked while tracing
                    raise NotImplementedError(unsupported)
                return tf.nn.softmax(x, axis=-1), nhwc

            ops.append(softmax)
        else:
            raise NotImplementedError(f"no TensorFlow translation for {type(layer).__name__}")

    def forward(x: tf.Tensor) -> dict[str, tf.Tensor]:
        nhwc = False
        for op in ops:
            x, nhwc = op(x, nhwc)
        if nhwc:
            x = tf.transpose(x, [0, 3, 1, 2])
        return {output_name: x}

    tf_module = tf.Module(name=f"{output_name}_model")
    # Attached so that tf.saved_model.save tracks them and writes them to variables/.
    tf_module.params = variables
    spec = tf.TensorSpec([None, *input_shape], tf.float32, name=input_name)
    # The signature's input key is taken from the TensorSpec's name.
    tf_module.serve = tf.function(forward, input_signature=[spec])
    return tf_module


def _pair(v: int | Sequence[int]) -> tuple[int, int]:
    return (v, v) if isinstance(v, int) else (int(v[0]), int(v[1]))
