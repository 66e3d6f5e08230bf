"""Reading what a ``.npy`` array declares before any of its data: one reader for every command line.

Internal API (used by :mod:`ufm.analyze` and :mod:`ufm.sharded`). A file is judged by its header, read
from the first bytes only: the magic string, the format version, a plain real dtype (Python objects are
refused and never unpickled), and the declared data present in the file. numpy's own messages are
passed on without their advice to load pickled data. Errors are :class:`InputError` (a ``ValueError``)
naming the argument that named the file.
"""

from __future__ import annotations

import math
import os
import zipfile
import zlib
from dataclasses import dataclass

import numpy as np

from ufm import _memory


class InputError(ValueError):
    """A bad input file (reported as one ``error:`` line, exit 2)."""


NPY_MAGIC = b"\x93NUMPY"
ZIP_MAGIC = (b"PK\x03\x04", b"PK\x05\x06")  # a local file header; an empty archive


class _Counted:
    """A file-like object's ``read`` that counts the bytes read (the .npy header's length)."""

    def __init__(self, stream):
        self.stream, self.count = stream, 0

    def read(self, size: int = -1) -> bytes:
        data = self.stream.read(size)
        self.count += len(data)
        return data


@dataclass(frozen=True)
class Declared:
    """What a .npy header declares: ``shape``, ``dtype``, ``fortran_order``, where the data start
    (``offset``) and how many bytes they take (``nbytes``); ``where`` names the file (and member)."""

    where: str
    shape: tuple
    dtype: np.dtype
    fortran_order: bool
    offset: int
    nbytes: int


def sanitised(error: Exception) -> str:
    """numpy's message, first line, without advice to load pickled data (never done here)."""
    text = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    if "pickle" in text.lower():
        return "the header is longer than numpy's safety limit of 10,000 bytes"
    return text


def read_header(stream, where: str, key: str) -> Declared:
    """The header of the .npy data at the start of ``stream`` (only its first bytes are read).

    Raises :class:`InputError` naming ``key`` for a stream that is not .npy (no magic string), a malformed
    or unsupported header, and a dtype that is not a plain real number (object arrays included: pickled
    data are never loaded)."""
    counted = _Counted(stream)
    try:
        head = counted.read(len(NPY_MAGIC))
        if head != NPY_MAGIC:
            kind = "an .npz (zip) archive" if head[:4] in ZIP_MAGIC else "not a .npy array"
            raise InputError(f"{key}: {where} is {kind} (it does not start with the .npy magic string \\x93NUMPY)")
        version = tuple(counted.read(2))
        if version == (1, 0):
            shape, fortran_order, dtype = np.lib.format.read_array_header_1_0(counted)
        elif version == (2, 0):
            shape, fortran_order, dtype = np.lib.format.read_array_header_2_0(counted)
        else:
            raise InputError(f"{key}: {where} has .npy format version {version} (1.0 and 2.0 are read)")
    except (ValueError, EOFError, OSError, zipfile.BadZipFile, zlib.error, NotImplementedError) as error:
        if isinstance(error, InputError):
            raise
        raise InputError(f"{key}: {where} has no valid .npy header ({sanitised(error)})") from None
    if dtype.hasobject:
        raise InputError(
            f"{key}: {where} holds Python objects (dtype {dtype}), not numbers; only numeric arrays are read"
        )
    if dtype.kind not in "fiu" or dtype.fields is not None or dtype.subdtype is not None:
        raise InputError(f"{key} must hold real numbers, got dtype {dtype} in {where}")
    nbytes = math.prod(shape) * dtype.itemsize
    return Declared(where, tuple(shape), dtype, bool(fortran_order), counted.count, nbytes)


def too_short(declared: Declared, available: int, key: str, what: str) -> None:
    """Refuse a header whose declared data do not fit in the ``available`` bytes (``what`` holds them)."""
    if declared.offset + declared.nbytes > available:
        raise InputError(
            f"{key}: {declared.where} declares shape {declared.shape} of {declared.dtype} "
            f"({_memory.gib(declared.nbytes)}) but {what} only {max(0, available - declared.offset)} bytes "
            "of data (truncated or forged)"
        )


def file_header(path: str, key: str) -> Declared:
    """The checked header of the ``.npy`` file ``path`` (:func:`read_header`), its declared data present."""
    try:
        with open(path, "rb") as handle:
            declared = read_header(handle, path, key)
            size = os.fstat(handle.fileno()).st_size
    except OSError as error:
        raise InputError(f"{key}: cannot read {path} as .npy ({error.strerror or error})") from None
    too_short(declared, size, key, "the file holds")
    return declared
