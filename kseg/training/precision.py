"""Precision policy: float32, or mixed float16/bfloat16 picked for the hardware."""

from pathlib import Path

import keras
import tensorflow as tf

PRECISION_POLICIES = ("float32", "mixed_float16", "mixed_bfloat16")

# CPU flags of matrix units that make bfloat16 convolutions and matmuls faster than float32.
# AVX512_BF16 alone is not enough: on an AVX512_BF16 CPU without AMX, oneDNN's bf16 convolution
# (TensorFlow 2.21) ran at half the float32 speed (benchmarks/throughput.py, the closing note of
# the foundation issue), so such CPUs stay on float32.
_FAST_BF16_CPU_FLAGS = ("amx_bf16",)


def cpu_supports_bf16(cpuinfo_path="/proc/cpuinfo"):
    """Tell whether the CPU runs bfloat16 convolutions faster than float32 (AMX-BF16 tiles).

    Reads the `flags` lines of a Linux `/proc/cpuinfo`; on systems without that file the answer is
    False, so callers fall back to float32. AVX512_BF16 without AMX answers False: its bfloat16
    kernels measured slower than float32 in TensorFlow.

    Args:
        cpuinfo_path: path of the cpuinfo file to read.

    Returns:
        True when an `amx_bf16` flag is listed.

    Example:
        >>> kseg.training.cpu_supports_bf16()  # doctest: +SKIP
        False
    """
    try:
        text = Path(cpuinfo_path).read_text(errors="ignore")
    except OSError:
        return False
    for line in text.splitlines():
        if line.startswith("flags") and ":" in line:
            flags = set(line.split(":", 1)[1].split())
            if flags.intersection(_FAST_BF16_CPU_FLAGS):
                return True
    return False


def _gpu_visible():
    return bool(tf.config.list_physical_devices("GPU"))


def resolve_precision(policy="auto"):
    """Turn a precision request into a Keras dtype-policy name without setting it.

    Args:
        policy: "auto", "float32", "mixed_float16" or "mixed_bfloat16". "auto" picks
            "mixed_float16" when a GPU is visible, "mixed_bfloat16" when the CPU has AMX-BF16
            units (see `cpu_supports_bf16`), and "float32" otherwise.

    Returns:
        The policy name.

    Example:
        >>> kseg.training.resolve_precision("float32")
        'float32'
    """
    if policy == "auto":
        if _gpu_visible():
            return "mixed_float16"
        if cpu_supports_bf16():
            return "mixed_bfloat16"
        return "float32"
    if policy not in PRECISION_POLICIES:
        raise ValueError(
            f"Unknown precision policy. Expected 'auto' or one of {PRECISION_POLICIES}. "
            f"Received: policy={policy!r}"
        )
    return policy


def set_precision(policy="auto"):
    """Set the global Keras dtype policy used by every model built afterwards.

    Mixed precision keeps variables in float32 and computes in float16 or bfloat16
    (Micikevicius et al., "Mixed Precision Training", ICLR 2018). This only calls
    `keras.mixed_precision.set_dtype_policy`; under "mixed_float16" `Model.compile` itself wraps
    the optimizer in a `keras.optimizers.LossScaleOptimizer` with a dynamic loss scale, while
    bfloat16 has float32's exponent range and needs no loss scaling. kseg builders keep their
    logits layer in float32 under any policy. Build models *after* calling this.

    Args:
        policy: "auto", "float32", "mixed_float16" or "mixed_bfloat16" (see `resolve_precision`).

    Returns:
        The name of the policy that was set.

    Example:
        >>> kseg.training.set_precision("float32")
        'float32'
    """
    name = resolve_precision(policy)
    keras.mixed_precision.set_dtype_policy(name)
    return name
