"""Published checkpoints: reading them and converting their weights onto kseg's models.

For now the package reads PyTorch state dicts (`.pth`, `.pt`) into numpy arrays without torch,
safely: `read_torch_checkpoint` unpickles with an allow-list, and a checkpoint that asks for
anything else raises `UnsafeCheckpointError` instead of running code.
"""

from kseg.pretrained.download import (
    CheckpointDownloadError,
    ChecksumMismatchError,
    atomic_path,
    cached_conversion_path,
    checkpoint_cache_path,
    fetch_checkpoint,
    hash_prefix_in_name,
    sha256_of_file,
)
from kseg.pretrained.registry import (
    NotLoadableError,
    PretrainedEntry,
    get,
    list_pretrained,
    load,
)
from kseg.pretrained.torch_checkpoint import UnsafeCheckpointError, read_torch_checkpoint

__all__ = ["read_torch_checkpoint", "UnsafeCheckpointError"]
__all__ += [
    "fetch_checkpoint",
    "checkpoint_cache_path",
    "cached_conversion_path",
    "atomic_path",
    "hash_prefix_in_name",
    "sha256_of_file",
    "ChecksumMismatchError",
    "CheckpointDownloadError",
    "list_pretrained",
    "get",
    "load",
    "PretrainedEntry",
    "NotLoadableError",
]
