"""fp8 matmuls for training (``train.fp8``), through torchao's float8 linear layers.

On Hopper and Ada GPUs the tensor cores multiply fp8 at twice their bf16 rate. torchao swaps each
``nn.Linear`` for a ``Float8Linear`` that casts inputs, weights and output gradients to fp8 with dynamic
per-tensor scales and keeps the weights, optimizer state and checkpoints in full precision: a checkpoint
from an fp8 run is an ordinary one, and evaluation, generation and export need no fp8 at all.

What is not converted, and why: the output layer (the logits feed a softmax over the whole vocabulary,
where fp8's 3-bit mantissa costs accuracy; the recipes that train in fp8 keep it in bf16) and any layer
whose sizes are not multiples of 16 (the fp8 matmul kernels need that). On a CPU the fp8 matmul is
emulated: correct, slow, for checking a configuration before it goes to a GPU.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch import nn

from gradwise.core.errors import ConfigError
from gradwise.core.runtime import quiet_torchao_import

FP8_MIN_CAPABILITY = (8, 9)  # Ada (sm_89) and Hopper (sm_90) have fp8 tensor cores


def import_float8() -> tuple:
    """torchao's float8 training entry points, or a one-line error that says how to install them."""
    quiet_torchao_import()
    try:
        from torchao.float8 import Float8LinearConfig, convert_to_float8_training
        from torchao.float8.float8_linear import Float8Linear
    except ImportError:
        raise ConfigError("train.fp8 needs torchao: pip install 'gradwise[fp8]' (or set train.fp8=false)") from None
    return convert_to_float8_training, Float8LinearConfig, Float8Linear


def check_fp8_device(device: torch.device, capability: tuple[int, int] | None = None) -> None:
    """Refuse devices without fp8 matmuls; a CPU emulates them (for checks, not speed)."""
    if device.type == "cpu":
        return
    if device.type != "cuda":
        raise ConfigError(f"train.fp8 runs on NVIDIA GPUs (and, emulated, on CPUs), not on {device.type}; "
                          "set train.fp8=false")
    major, minor = capability or torch.cuda.get_device_capability(device)
    if (major, minor) < FP8_MIN_CAPABILITY:
        raise ConfigError(f"train.fp8 needs a GPU with fp8 tensor cores (compute capability 8.9+: H100, H200, L4, "
                          f"RTX 4090); this one is {major}.{minor}; set train.fp8=false")


def _convertible(module: nn.Module, output_layer: nn.Module | None) -> bool:
    return (type(module) is nn.Linear and module is not output_layer
            and module.in_features % 16 == 0 and module.out_features % 16 == 0)


def output_layer_of(model: nn.Module) -> nn.Module | None:
    """The layer that produces logits: gradwise's GPT ``lm_head``, a Hugging Face model's output embeddings."""
    if hasattr(model, "lm_head"):
        return model.lm_head
    get = getattr(model, "get_output_embeddings", None)
    return get() if callable(get) else None


def convert_to_fp8(model: nn.Module, device: torch.device) -> int:
    """Swap the model's eligible linear layers for fp8 ones, in place; return how many were swapped.

    Call it after the model is on its device and before FSDP sharding, DDP wrapping or ``torch.compile``.
    """
    check_fp8_device(device)
    convert, config_cls, float8_linear = import_float8()
    output_layer = output_layer_of(model)
    eligible = {id(m) for m in model.modules() if _convertible(m, output_layer)}
    if not eligible:
        raise ConfigError("train.fp8 found no nn.Linear layer whose sizes are multiples of 16 (fp8 matmuls need "
                          "that; Hugging Face GPT-2 builds its layers from Conv1D, which torchao does not convert); "
                          "use sizes such as model.n_embd=64, or set train.fp8=false")
    # On a CPU the fp8 matmul is emulated in higher precision after the fp8 casts (same rounding of the inputs),
    # which any torch can run; CUDA uses the fp8 tensor-core kernel.
    convert(model, config=config_cls(emulate=device.type == "cpu"),
            module_filter_fn=lambda module, _name: id(module) in eligible)
    return sum(1 for _ in fp8_layers(model, float8_linear))


def fp8_if_asked(model: nn.Module, fp8: bool, device: torch.device) -> nn.Module:
    """``train.fp8``: the model as training runs it (converted in place), wherever a run's model is built."""
    if fp8:
        convert_to_fp8(model, device)
    return model


def fp8_layers(model: nn.Module, float8_linear: type | None = None) -> Iterator[nn.Module]:
    """The model's fp8 linear layers."""
    cls = float8_linear or import_float8()[2]
    return (m for m in model.modules() if isinstance(m, cls))
