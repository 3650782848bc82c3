"""kseg: classic image-segmentation architectures for Keras 3 on TensorFlow.

Example:
    >>> import kseg
    >>> model = kseg.models.DeepLabV3Plus(num_classes=21, backbone="mobilenetv2", alpha=0.35)
"""

__version__ = "0.1.0"

from kseg import startup as _startup

try:
    # Without TensorFlow's start-up banner (oneDNN, CPU features), which buries kseg's output.
    _startup.import_tensorflow()
except ImportError as error:  # pragma: no cover - depends on the installation
    raise ImportError(
        "kseg needs TensorFlow, which comes through an extra: pip install 'kseg[cpu]' on a "
        "machine without an NVIDIA GPU, 'kseg[gpu]' on Linux with one, or 'kseg[tf]' elsewhere."
    ) from error

from kseg import (
    backbones,
    data,
    detection,
    distribute,
    evaluation,
    export,
    inference,
    layers,
    losses,
    metrics,
    models,
    pretrained,
    recipes,
    summary,
    tasks,
    testing,
    training,
    utils,
    validation,
    viz,
    weak,
)

__all__ = [
    "__version__",
    "backbones",
    "data",
    "detection",
    "distribute",
    "evaluation",
    "export",
    "inference",
    "layers",
    "losses",
    "metrics",
    "models",
    "pretrained",
    "recipes",
    "summary",
    "tasks",
    "testing",
    "training",
    "utils",
    "validation",
    "viz",
    "weak",
]
