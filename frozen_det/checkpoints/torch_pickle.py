"""Read PyTorch `.pth` state dicts into numpy without torch, safely.

A checkpoint file is untrusted input: unpickling can run arbitrary code. Like torch's
``weights_only=True`` loading, the unpickler here resolves only the few globals needed to
rebuild tensors (an allow-list) and refuses anything else *before* it is called.

Both of torch's on-disk formats are read:

* the zip format (torch >= 1.6): ``<name>/data.pkl`` plus one raw file per storage under
  ``<name>/data/<key>``;
* the legacy format: a magic-number pickle, a protocol pickle, a sys-info pickle, the object
  pickle, the list of storage keys, then each storage as an int64 element count followed by
  its raw little-endian bytes.
"""

from __future__ import annotations

import collections
import io
import os
import pickle
import struct
import zipfile
from typing import Any, BinaryIO

import numpy as np

_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C

_STORAGE_DTYPES = {
    "DoubleStorage": np.float64,
    "FloatStorage": np.float32,
    "HalfStorage": np.float16,
    "LongStorage": np.int64,
    "IntStorage": np.int32,
    "ShortStorage": np.int16,
    "CharStorage": np.int8,
    "ByteStorage": np.uint8,
    "BoolStorage": np.bool_,
}


class UnsafeCheckpointError(pickle.UnpicklingError):
    """The file asked for a Python global outside the tensor-rebuilding allow-list."""


class _StorageType:
    """Stand-in for torch.<X>Storage classes: only carries the element dtype."""

    def __init__(self, name: str):
        self.name = name
        self.dtype = np.dtype(_STORAGE_DTYPES[name])


class _LazyStorage:
    """A storage referenced by the pickle; its bytes are attached after (legacy) or on demand."""

    def __init__(self, dtype: np.dtype, key: str):
        self.dtype = dtype
        self.key = key
        self.array: np.ndarray | None = None


def _rebuild_tensor(storage: _LazyStorage, offset: int, size, stride, *unused) -> "_PendingTensor":
    return _PendingTensor(storage, int(offset), tuple(size), tuple(stride))


def _rebuild_parameter(data, requires_grad, backward_hooks, *unused):
    return data


class _PendingTensor:
    """A tensor view whose storage bytes may not have been read yet (legacy format)."""

    def __init__(self, storage: _LazyStorage, offset: int, size: tuple, stride: tuple):
        self.storage, self.offset, self.size, self.stride = storage, offset, size, stride

    def materialise(self) -> np.ndarray:
        flat = self.storage.array
        if flat is None:
            raise pickle.UnpicklingError(f"storage {self.storage.key!r} has no data in the file")
        if not self.size:
            return np.array(flat[self.offset])
        needed = self.offset + 1 + sum((n - 1) * s for n, s in zip(self.size, self.stride))
        if needed > flat.size:
            raise pickle.UnpicklingError(
                f"tensor view (offset {self.offset}, size {self.size}, stride {self.stride}) "
                f"reads past its storage of {flat.size} elements"
            )
        view = np.lib.stride_tricks.as_strided(
            flat[self.offset :], shape=self.size, strides=tuple(s * flat.itemsize for s in self.stride), writeable=False
        )
        return np.array(view)


_ALLOWED_GLOBALS: dict[tuple[str, str], Any] = {
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("torch._utils", "_rebuild_tensor"): _rebuild_tensor,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    **{("torch", name): _StorageType(name) for name in _STORAGE_DTYPES},
}


class _RestrictedUnpickler(pickle.Unpickler):
    def __init__(self, file: BinaryIO, persistent_load):
        super().__init__(file)
        self._persistent_load = persistent_load

    def find_class(self, module: str, name: str):
        try:
            return _ALLOWED_GLOBALS[(module, name)]
        except KeyError:
            raise UnsafeCheckpointError(
                f"refusing to load global {module}.{name}: a weights file may only reference "
                "tensor-rebuilding globals (collections.OrderedDict, torch._utils._rebuild_*, "
                "torch.*Storage). Re-save the checkpoint as a plain state_dict."
            ) from None

    def persistent_load(self, pid):
        return self._persistent_load(pid)


def _storage_from_pid(pid, storages: dict[str, _LazyStorage]) -> _LazyStorage:
    if not isinstance(pid, tuple) or not pid or pid[0] != "storage":
        raise pickle.UnpicklingError(f"unsupported persistent id {pid!r}")
    storage_type, key = pid[1], str(pid[2])
    if not isinstance(storage_type, _StorageType):
        raise pickle.UnpicklingError(f"unsupported storage type {storage_type!r}")
    if key not in storages:
        storages[key] = _LazyStorage(storage_type.dtype, key)
    return storages[key]


def _materialise(obj):
    if isinstance(obj, _PendingTensor):
        return obj.materialise()
    if isinstance(obj, dict):
        return type(obj)((k, _materialise(v)) for k, v in obj.items())
    if isinstance(obj, (list, tuple)):
        return type(obj)(_materialise(v) for v in obj)
    return obj


def _load_zip(path: str) -> Any:
    with zipfile.ZipFile(path) as archive:
        names = archive.namelist()
        pickles = [n for n in names if n.endswith("/data.pkl") or n == "data.pkl"]
        if len(pickles) != 1:
            raise pickle.UnpicklingError(f"{path}: expected one data.pkl in the archive, found {pickles}")
        root = pickles[0][: -len("data.pkl")]
        storages: dict[str, _LazyStorage] = {}
        obj = _RestrictedUnpickler(
            io.BytesIO(archive.read(pickles[0])), lambda pid: _storage_from_pid(pid, storages)
        ).load()
        byteorder = "little"
        if f"{root}byteorder" in names:
            byteorder = archive.read(f"{root}byteorder").decode().strip()
        for key, storage in storages.items():
            raw = archive.read(f"{root}data/{key}")
            dtype = storage.dtype.newbyteorder("<" if byteorder == "little" else ">")
            storage.array = np.frombuffer(raw, dtype=dtype).astype(storage.dtype.newbyteorder("="))
    return _materialise(obj)


def _load_legacy(f: BinaryIO, path: str) -> Any:
    def safe_load():
        return _RestrictedUnpickler(
            f, lambda pid: (_ for _ in ()).throw(pickle.UnpicklingError("persistent id outside the object pickle"))
        ).load()

    try:
        magic = safe_load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, IndexError) as e:
        magic = e  # not a pickle at all (a text file, an image, a safetensors file, ...)
    if magic != _LEGACY_MAGIC:
        raise pickle.UnpicklingError(
            f"{path} is not a PyTorch checkpoint (neither torch's zip format nor its legacy pickle; "
            f"{magic if isinstance(magic, Exception) else 'another pickle'}): give the .pth / .pt file torch.save wrote"
        )
    safe_load()  # protocol version
    safe_load()  # sys info (endianness, type sizes)
    storages: dict[str, _LazyStorage] = {}
    obj = _RestrictedUnpickler(f, lambda pid: _storage_from_pid(pid, storages)).load()
    keys = safe_load()
    for key in keys:
        header = f.read(8)
        if len(header) != 8:
            raise pickle.UnpicklingError(f"{path}: storage {key} is truncated (no size header)")
        (count,) = struct.unpack("<q", header)
        storage = storages[str(key)]
        nbytes = count * storage.dtype.itemsize
        raw = f.read(nbytes)
        if len(raw) != nbytes:
            raise pickle.UnpicklingError(f"{path}: storage {key} is truncated")
        storage.array = np.frombuffer(raw, dtype=storage.dtype.newbyteorder("<")).astype(storage.dtype)
    return _materialise(obj)


def load_torch_checkpoint(path: str | os.PathLike) -> Any:
    """Returns the unpickled object with every tensor as a numpy array."""
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"torch checkpoint not found: {path}")
    if zipfile.is_zipfile(path):
        return _load_zip(path)
    with open(path, "rb") as f:
        return _load_legacy(f, path)


def load_torch_state_dict(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """A flat {name: array} state dict; unwraps {'state_dict': ...} / {'model': ...} wrappers."""
    obj = load_torch_checkpoint(path)
    for wrapper in ("state_dict", "model"):
        if isinstance(obj, dict) and wrapper in obj and isinstance(obj[wrapper], dict):
            obj = obj[wrapper]
    if not isinstance(obj, dict):
        raise ValueError(f"{path} does not hold a state dict (got {type(obj).__name__})")
    return {str(k): v for k, v in obj.items() if isinstance(v, np.ndarray)}
