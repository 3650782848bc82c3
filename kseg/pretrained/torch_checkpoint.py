"""Reads PyTorch checkpoints (`.pth`, `.pt` state dicts) into numpy arrays, without torch.

`torch.save` writes a pickle whose tensors point, through persistent ids, at raw storages kept
outside the pickle. Two layouts exist:

- the zip format (the default since PyTorch 1.6): an archive holding `<name>/data.pkl`, one
  record `<name>/data/<key>` per storage (raw bytes in the writer's byte order) and a
  `<name>/byteorder` record (`little` when absent);
- the legacy format (`_use_new_zipfile_serialization=False`, and every checkpoint published
  before 2020): back-to-back pickles of a magic number, a protocol version and the writer's
  system information, then the main pickle, then the sorted list of storage keys, then each
  storage in that order as an 8-byte little-endian element count followed by its data, always
  little-endian.

Inside the pickle a tensor is a call `torch._utils._rebuild_tensor_v2(storage, storage_offset,
size, stride, requires_grad, backward_hooks[, metadata])` (element offsets and strides), a
parameter wraps one in `torch._utils._rebuild_parameter`, and dtypes PyTorch gave no storage
class of its own (uint16, uint32, uint64) use `_rebuild_tensor_v3` with an untyped (byte)
storage and the dtype as an extra argument. A storage's persistent id is `("storage",
storage_type, key, location, numel)`, plus a view record in the legacy format; `numel` counts
elements of the storage type, or bytes for `torch.storage.UntypedStorage`.

Unpickling can call any importable function, so the reader unpickles with an allow-list: the
tensor-rebuild functions map to numpy code here, storage and dtype names map to descriptions
of their element type, and only `collections.OrderedDict` and a few harmless builtins load as
themselves. Anything else raises `UnsafeCheckpointError` before it is imported, so a checkpoint
never runs code. Whole pickled models (`torch.save(model)`), TorchScript archives and
checkpoints holding other Python objects are refused for that reason: save and publish
`model.state_dict()` instead.
"""

import collections
import io
import os
import pickle
import zipfile
from dataclasses import dataclass

import numpy as np

# The first two pickles of a legacy checkpoint (torch/serialization.py).
LEGACY_MAGIC_NUMBER = 0x1950A86A20F9469CFC6C
LEGACY_PROTOCOL_VERSION = 1001

# Top-level keys under which training scripts commonly nest the model's state dict.
STATE_DICT_KEYS = ("state_dict", "model")


class UnsafeCheckpointError(ValueError):
    """A checkpoint asked to import something a state dict never needs; it was not loaded."""


class _BadCheckpoint(ValueError):
    """A file that is not a readable checkpoint; the message names the file (and key)."""


@dataclass(frozen=True)
class _ElementType:
    """A torch dtype as stored: its numpy type (without byte order) and how to convert it."""

    torch_name: str
    stored: str  # numpy type code of the stored elements
    # "bfloat16": widen to float32 by a 16-bit shift; "bool": any non-zero byte is True.
    conversion: str = ""

    @property
    def itemsize(self):
        return np.dtype(self.stored).itemsize


_ELEMENT_TYPES = {
    element.torch_name: element
    for element in (
        _ElementType("float64", "f8"),
        _ElementType("float32", "f4"),
        _ElementType("float16", "f2"),
        _ElementType("bfloat16", "u2", "bfloat16"),
        _ElementType("complex128", "c16"),
        _ElementType("complex64", "c8"),
        _ElementType("int64", "i8"),
        _ElementType("int32", "i4"),
        _ElementType("int16", "i2"),
        _ElementType("int8", "i1"),
        _ElementType("uint8", "u1"),
        _ElementType("bool", "u1", "bool"),
        _ElementType("uint16", "u2"),
        _ElementType("uint32", "u4"),
        _ElementType("uint64", "u8"),
    )
}
_BYTES = _ElementType("uint8", "u1")

# The typed storage classes that persistent ids name (torch/storage.py), by element type.
_STORAGE_CLASSES = {
    "DoubleStorage": "float64",
    "FloatStorage": "float32",
    "HalfStorage": "float16",
    "BFloat16Storage": "bfloat16",
    "ComplexDoubleStorage": "complex128",
    "ComplexFloatStorage": "complex64",
    "LongStorage": "int64",
    "IntStorage": "int32",
    "ShortStorage": "int16",
    "CharStorage": "int8",
    "ByteStorage": "uint8",
    "BoolStorage": "bool",
}


@dataclass(frozen=True)
class _StorageType:
    """What a storage class name in a pickle stands for; `element` None means raw bytes."""

    element: _ElementType | None


@dataclass(frozen=True)
class _Dtype:
    """What a `torch.<dtype>` global in a pickle stands for."""

    element: _ElementType


@dataclass(frozen=True)
class _StorageRef:
    """A byte range of one stored storage (`stored_bytes` long), of `element` type."""

    key: str
    element: _ElementType
    stored_bytes: int
    byte_start: int
    byte_length: int


@dataclass(frozen=True)
class _TensorRecord:
    """A tensor as the pickle describes it, read from its storage only once chosen."""

    storage: _StorageRef
    element: _ElementType
    offset: int
    size: tuple
    stride: tuple
    conjugate: bool = False
    negate: bool = False


def _latin1_encode(text, encoding="latin1"):
    # Protocol-2 pickles spell a bytes object as `_codecs.encode(text, "latin1")`.
    if encoding not in ("latin1", "latin-1") or not isinstance(text, str):
        raise pickle.UnpicklingError("_codecs.encode is allowed for latin1 bytes only")
    return text.encode("latin1")


def _allowed_constants():
    """The globals a state dict needs that load as plain values, by (module, name)."""
    allowed = {("collections", "OrderedDict"): collections.OrderedDict}
    for builtins_module in ("builtins", "__builtin__"):  # Python 3 and Python 2 pickles
        for builtin in (set, frozenset):
            allowed[builtins_module, builtin.__name__] = builtin
    allowed["_codecs", "encode"] = _latin1_encode
    # GPU checkpoints written before PyTorch 1.13 name `torch.cuda.<Type>Storage`.
    for module in ("torch", "torch.cuda"):
        for class_name, element in _STORAGE_CLASSES.items():
            allowed[module, class_name] = _StorageType(_ELEMENT_TYPES[element])
    allowed["torch", "UntypedStorage"] = _StorageType(None)
    allowed["torch.storage", "UntypedStorage"] = _StorageType(None)
    for element in _ELEMENT_TYPES.values():
        allowed["torch", element.torch_name] = _Dtype(element)
    return allowed


_ALLOWED_CONSTANTS = _allowed_constants()


def _check_ints(value, what, source, *, sequence):
    values = value if sequence else (value,)
    if (sequence and not isinstance(value, tuple | list)) or not all(
        isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in values
    ):
        raise _BadCheckpoint(
            f"{source}: a tensor's {what} must be non-negative integers, got {value!r}"
        )
    return tuple(values) if sequence else value


class _RestrictedUnpickler(pickle.Unpickler):
    """Unpickles a checkpoint's pickles, importing only what a state dict needs.

    Tensors come out as `_TensorRecord`s; `storages` collects every storage the pickle named,
    by key, with its element type and element count.
    """

    def __init__(self, file, source, storages):
        super().__init__(file, encoding="utf-8")
        self.source = source
        self.storages = storages
        self.rebuild_functions = {
            "_rebuild_tensor": self.rebuild_tensor,
            "_rebuild_tensor_v2": self.rebuild_tensor_v2,
            "_rebuild_tensor_v3": self.rebuild_tensor_v3,
            "_rebuild_parameter": self.rebuild_parameter,
            "_rebuild_parameter_with_state": self.rebuild_parameter,
        }

    def find_class(self, module, name):
        if (module, name) in _ALLOWED_CONSTANTS:
            return _ALLOWED_CONSTANTS[module, name]
        if module == "torch._utils" and name in self.rebuild_functions:
            return self.rebuild_functions[name]
        if module in ("torch", "torch.cuda") and name.endswith("Storage"):
            raise _BadCheckpoint(
                f"{self.source}: holds {module}.{name} tensors, an element type this reader "
                f"does not decode (it reads {', '.join(_ELEMENT_TYPES)})"
            )
        raise UnsafeCheckpointError(
            f"{self.source}: the pickle asks to import {module}.{name}, which a state dict "
            "never needs; refusing to unpickle it (it could run code). Only state dicts of "
            "tensors, numbers, strings and containers load; save model.state_dict(), not the "
            "model or other Python objects."
        )

    def persistent_load(self, pid):
        if not isinstance(pid, tuple) or not pid or pid[0] not in ("storage", b"storage"):
            what = pid[0] if isinstance(pid, tuple) and pid else pid
            raise UnsafeCheckpointError(
                f"{self.source}: the pickle refers to a persistent object of kind {what!r}; "
                "only tensor storages are read (a pickled module class means a whole model "
                "was saved: save model.state_dict() instead)"
            )
        if len(pid) not in (5, 6) or not isinstance(pid[1], _StorageType):
            raise _BadCheckpoint(f"{self.source}: malformed storage reference {pid!r}")
        storage_type, key, numel = pid[1], pid[2], pid[4]
        key = key.decode("ascii") if isinstance(key, bytes) else key
        if not isinstance(key, str):
            raise _BadCheckpoint(f"{self.source}: storage key {key!r} is not a string")
        numel = _check_ints(numel, "storage size", self.source, sequence=False)
        element = storage_type.element or _BYTES
        element, numel = self.storages.setdefault(key, (element, numel))
        stored_bytes = numel * element.itemsize
        view = pid[5] if len(pid) == 6 else None
        if view is None:
            return _StorageRef(key, element, stored_bytes, 0, stored_bytes)
        # A legacy storage view: (view key, element offset, element count) into the storage.
        if not isinstance(view, tuple) or len(view) != 3:
            raise _BadCheckpoint(f"{self.source}: malformed storage view {view!r}")
        offset = _check_ints(view[1], "storage view offset", self.source, sequence=False)
        length = _check_ints(view[2], "storage view size", self.source, sequence=False)
        return _StorageRef(
            key, element, stored_bytes, offset * element.itemsize, length * element.itemsize
        )

    def rebuild_tensor(self, storage, storage_offset, size, stride):
        return self.tensor_record(storage, storage_offset, size, stride)

    def rebuild_tensor_v2(
        self, storage, storage_offset, size, stride, requires_grad, hooks, metadata=None
    ):
        return self.tensor_record(storage, storage_offset, size, stride, metadata=metadata)

    def rebuild_tensor_v3(
        self, storage, storage_offset, size, stride, requires_grad, hooks, dtype, metadata=None
    ):
        if not isinstance(dtype, _Dtype):
            raise _BadCheckpoint(f"{self.source}: a tensor's dtype is {dtype!r}, not a torch dtype")
        return self.tensor_record(
            storage, storage_offset, size, stride, element=dtype.element, metadata=metadata
        )

    def tensor_record(self, storage, storage_offset, size, stride, *, element=None, metadata=None):
        if not isinstance(storage, _StorageRef):
            raise _BadCheckpoint(f"{self.source}: a tensor's storage is {type(storage).__name__}")
        size = _check_ints(size, "size", self.source, sequence=True)
        stride = _check_ints(stride, "stride", self.source, sequence=True)
        if len(size) != len(stride):
            raise _BadCheckpoint(f"{self.source}: tensor size {size} and stride {stride} differ")
        metadata = metadata if isinstance(metadata, dict) else {}
        return _TensorRecord(
            storage=storage,
            element=element or storage.element,
            offset=_check_ints(storage_offset, "storage offset", self.source, sequence=False),
            size=size,
            stride=stride,
            conjugate=bool(metadata.get("conj")),
            negate=bool(metadata.get("neg")),
        )

    def rebuild_parameter(self, data, requires_grad, hooks, state=None):
        if not isinstance(data, _TensorRecord):
            raise _BadCheckpoint(f"{self.source}: a parameter wraps {type(data).__name__}")
        return data


class _ZipStorages:
    """The storages of a zip-format checkpoint: records `<prefix>data/<key>`."""

    def __init__(self, archive, prefix, byteorder, source):
        self.archive = archive
        self.prefix = prefix
        self.byteorder = byteorder
        self.source = source

    def read(self, key, nbytes):
        name = f"{self.prefix}data/{key}"
        try:
            with self.archive.open(name) as record:
                return record.read(nbytes)
        except KeyError:
            raise _BadCheckpoint(f"{self.source}: storage record {name!r} is missing") from None
        except (zipfile.BadZipFile, EOFError, OSError) as error:
            raise _BadCheckpoint(
                f"{self.source}: storage record {name!r} is corrupt: {error}"
            ) from None


class _LegacyStorages:
    """The storages of a legacy checkpoint: byte ranges of the open file, by key."""

    byteorder = "<"

    def __init__(self, file, ranges, source):
        self.file = file
        self.ranges = ranges  # key: (file offset, bytes stored)
        self.source = source

    def read(self, key, nbytes):
        if key not in self.ranges:
            raise _BadCheckpoint(f"{self.source}: storage {key!r} is not in the storage list")
        start, stored = self.ranges[key]
        self.file.seek(start)
        return self.file.read(min(nbytes, stored))


def _materialise(record, storages, cache, name, source):
    """The numpy array (C-contiguous, native byte order) of one tensor record."""
    ref = record.storage
    if ref.key not in cache:
        cache[ref.key] = storages.read(ref.key, ref.stored_bytes)
    data = cache[ref.key][ref.byte_start : ref.byte_start + ref.byte_length]
    element = record.element
    stored = np.dtype(element.stored).newbyteorder(storages.byteorder)
    flat = np.frombuffer(data, dtype=stored, count=len(data) // element.itemsize)
    if 0 in record.size:
        values = np.zeros(record.size, stored)
    else:
        last = record.offset + sum((n - 1) * s for n, s in zip(record.size, record.stride))
        if last >= flat.size:
            raise _BadCheckpoint(
                f"{source}: tensor {name!r} ({element.torch_name}, size {list(record.size)}, "
                f"stride {list(record.stride)}, offset {record.offset}) needs {last + 1} "
                f"elements of storage {ref.key!r}, which holds {flat.size}"
            )
        values = np.lib.stride_tricks.as_strided(
            flat[record.offset :],
            shape=record.size,
            strides=[s * element.itemsize for s in record.stride],
            writeable=False,
        )
    values = np.array(values, dtype=stored.newbyteorder("="), order="C")
    if element.conversion == "bfloat16":
        values = (values.astype(np.uint32) << 16).view(np.float32)
    elif element.conversion == "bool":
        values = values != 0
    if record.negate:
        values = np.negative(values)
    if record.conjugate:
        values = np.conj(values)
    return values


def _is_tensor_dict(value):
    return isinstance(value, dict) and all(
        isinstance(k, str) and isinstance(v, _TensorRecord) for k, v in value.items()
    )


def _select_state_dict(content, source, key):
    """The dict of tensor records that is the checkpoint's state dict (see the reader)."""
    if key is not None:
        if not isinstance(content, dict) or key not in content:
            keys = list(content) if isinstance(content, dict) else []
            raise _BadCheckpoint(f"{source}: no top-level key {key!r}; the keys are {keys}")
        if not _is_tensor_dict(content[key]):
            raise _BadCheckpoint(f"{source}: content[{key!r}] is not a dict of tensors")
        return content[key]
    if _is_tensor_dict(content):
        return content
    if not isinstance(content, dict):
        raise _BadCheckpoint(
            f"{source}: holds a {type(content).__name__}, not a state dict (a dict of tensors)"
        )
    nested = [k for k in STATE_DICT_KEYS if k in content and _is_tensor_dict(content[k])]
    if len(nested) == 1:
        return content[nested[0]]
    raise _BadCheckpoint(
        f"{source}: not a state dict and no single nested one: the top-level keys are "
        f"{list(content)}; a state dict is a dict of tensors, at the top level or under one of "
        f"{list(STATE_DICT_KEYS)}. Pass key= to name the entry holding it."
    )


def _open_zip(file, source):
    try:
        archive = zipfile.ZipFile(file)
    except (zipfile.BadZipFile, EOFError, OSError) as error:
        raise _BadCheckpoint(
            f"{source}: looks like a zip-format PyTorch checkpoint but the archive is "
            f"truncated or corrupt ({error})"
        ) from None
    names = archive.namelist()
    if any(name.endswith("constants.pkl") for name in names):
        raise _BadCheckpoint(
            f"{source}: a TorchScript archive (torch.jit.save), not a state dict; load it with "
            "torch.jit.load and torch.save its state_dict()"
        )
    pickles = [n for n in names if n.endswith("/data.pkl") and n.count("/") == 1]
    if not pickles:
        raise _BadCheckpoint(f"{source}: a zip archive without a <name>/data.pkl record")
    return archive, pickles[0][: -len("data.pkl")]


def _read_zip(file, source, key):
    archive, prefix = _open_zip(file, source)
    with archive:
        names = set(archive.namelist())
        byteorder = "<"
        if f"{prefix}byteorder" in names:
            record = archive.read(f"{prefix}byteorder")
            if record not in (b"little", b"big"):
                raise _BadCheckpoint(f"{source}: unknown byte order record {record!r}")
            byteorder = "<" if record == b"little" else ">"
        try:
            data_pkl = archive.read(f"{prefix}data.pkl")
        except (zipfile.BadZipFile, EOFError, OSError) as error:
            raise _BadCheckpoint(f"{source}: its data.pkl record is corrupt ({error})") from None
        content = _unpickle(io.BytesIO(data_pkl), source, {})
        state_dict = _select_state_dict(content, source, key)
        return _to_arrays(state_dict, _ZipStorages(archive, prefix, byteorder, source), source)


def _unpickle(file, source, storages):
    """One pickle from `file`, with the allow-list; unreadable pickles name the file."""
    try:
        return _RestrictedUnpickler(file, source, storages).load()
    except (UnsafeCheckpointError, _BadCheckpoint):
        raise
    except Exception as error:  # whatever malformed bytes make the unpickler raise
        raise _BadCheckpoint(
            f"{source}: not a PyTorch checkpoint, or a truncated one (its pickle does not "
            f"load: {type(error).__name__}: {error})"
        ) from None


def _read_legacy(file, source, key):
    magic = _unpickle(file, source, {})
    if magic != LEGACY_MAGIC_NUMBER:
        raise _BadCheckpoint(
            f"{source}: not a PyTorch checkpoint (neither a zip archive nor the legacy format's "
            "magic number)"
        )
    version = _unpickle(file, source, {})
    if version != LEGACY_PROTOCOL_VERSION:
        raise _BadCheckpoint(f"{source}: unknown legacy checkpoint protocol version {version!r}")
    _unpickle(file, source, {})  # the writer's system information; data is little-endian
    storages = {}
    content = _unpickle(file, source, storages)
    keys = _unpickle(file, source, {})
    if not isinstance(keys, list):
        raise _BadCheckpoint(f"{source}: the storage key list is a {type(keys).__name__}")
    position = file.tell()
    end = file.seek(0, os.SEEK_END)
    ranges = {}
    for storage_key in keys:
        if storage_key not in storages:
            raise _BadCheckpoint(f"{source}: storage {storage_key!r} is listed but never used")
        element, numel = storages[storage_key]
        file.seek(position)
        header = file.read(8)
        if len(header) < 8:
            raise _BadCheckpoint(f"{source}: the file ends before storage {storage_key!r}")
        count = int.from_bytes(header, "little")
        if count != numel:
            raise _BadCheckpoint(
                f"{source}: storage {storage_key!r} holds {count} elements, the pickle says {numel}"
            )
        nbytes = count * element.itemsize
        ranges[storage_key] = (position + 8, max(0, min(nbytes, end - position - 8)))
        position += 8 + nbytes
    state_dict = _select_state_dict(content, source, key)
    return _to_arrays(state_dict, _LegacyStorages(file, ranges, source), source)


def _to_arrays(state_dict, storages, source):
    cache = {}
    return collections.OrderedDict(
        (name, _materialise(record, storages, cache, name, source))
        for name, record in state_dict.items()
    )


def read_torch_checkpoint(path_or_file, *, key=None):
    """Reads a PyTorch state dict (`.pth`, `.pt`) into numpy arrays, without importing torch.

    Reads both layouts `torch.save` writes: the zip format (PyTorch 1.6 and later) and the
    legacy format of older checkpoints. Views keep their values (strided, transposed and
    offset views of a shared storage each come out as their own C-contiguous array), storages
    written big-endian come out in native byte order, bfloat16 tensors come out as float32
    (exactly: numpy has no bfloat16), 0-d tensors as 0-d arrays, and conjugate or negative
    views with the bit applied.

    The state dict is the top-level dict when all its values are tensors; otherwise, when
    exactly one of the top-level entries `"state_dict"` and `"model"` is a dict of tensors,
    that entry (training checkpoints such as `{"epoch": 3, "model": ..., "optimizer": ...}`).
    Anything else is an error naming the top-level keys; `key` names the entry explicitly.

    The pickle is read with an allow-list (`collections.OrderedDict`, PyTorch's tensor-rebuild
    functions, storage and dtype names, and a few builtins), so a checkpoint cannot run code:
    anything else raises `UnsafeCheckpointError` without being imported. Checkpoints of whole
    models, TorchScript archives and entries holding other Python objects are refused.

    Args:
        path_or_file: A path, or a binary file object that can seek.
        key: The top-level entry holding the state dict, if the automatic choice is not wanted.

    Returns:
        An `OrderedDict` of parameter name to `numpy.ndarray`, in the checkpoint's order.

    Raises:
        FileNotFoundError: If the path does not exist.
        UnsafeCheckpointError: If the pickle imports anything a state dict never needs.
        ValueError: If the file is not a PyTorch checkpoint, is truncated or corrupt, holds no
            state dict (see above), or a storage is shorter than a tensor needs; the message
            names the file and, where one is at fault, the tensor or storage key.

    Example:
        >>> from kseg.pretrained import read_torch_checkpoint
        >>> weights = read_torch_checkpoint("resnet18-f37072fd.pth")  # doctest: +SKIP
        >>> weights["conv1.weight"].shape  # doctest: +SKIP
        (64, 3, 7, 7)

        A file that is not a checkpoint is refused with an error naming it, and a pickle that
        would call a function is refused before the function is imported:

        >>> import pathlib, pickle, tempfile
        >>> folder = pathlib.Path(tempfile.mkdtemp())
        >>> _ = (folder / "notes.pth").write_text("model trained on CamVid")
        >>> try:
        ...     read_torch_checkpoint(folder / "notes.pth")
        ... except ValueError as error:
        ...     print(error)
        /.../notes.pth: not a PyTorch checkpoint, or a truncated one ...
        >>> _ = (folder / "trap.pth").write_bytes(pickle.dumps(print))
        >>> try:
        ...     read_torch_checkpoint(folder / "trap.pth")
        ... except ValueError as error:
        ...     print(type(error).__name__, "|", error)
        UnsafeCheckpointError | /.../trap.pth: the pickle asks to import builtins.print, ...
        >>> import shutil
        >>> shutil.rmtree(folder)
    """
    if isinstance(path_or_file, str | os.PathLike):
        path = os.fspath(path_or_file)
        try:
            file = open(path, "rb")
        except FileNotFoundError:
            raise FileNotFoundError(f"{path}: no such checkpoint file") from None
        with file:
            return _read(file, path, key)
    if not all(hasattr(path_or_file, attr) for attr in ("read", "seek", "tell")):
        raise TypeError(
            "read_torch_checkpoint takes a path or a binary file object that can seek; "
            f"received: {type(path_or_file).__name__}"
        )
    source = getattr(path_or_file, "name", None) or f"<{type(path_or_file).__name__}>"
    return _read(path_or_file, str(source), key)


def _read(file, source, key):
    start = file.tell()
    head = file.read(4)
    if not isinstance(head, bytes):
        raise TypeError(f"{source}: the file object must be opened in binary mode")
    file.seek(start)
    if head == b"PK\x03\x04":
        return _read_zip(file, source, key)
    if not head:
        raise _BadCheckpoint(f"{source}: empty file, not a PyTorch checkpoint")
    return _read_legacy(file, source, key)


__all__ = ["read_torch_checkpoint", "UnsafeCheckpointError", "STATE_DICT_KEYS"]
