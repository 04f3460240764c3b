"""Read Flax msgpack checkpoints (``flax_model.msgpack``) without JAX or Flax, one tensor at a time.

Flax's `serialization.to_bytes` writes a nested msgpack map whose leaves are ext records:
type 1 = ndarray, payload = msgpack ``[shape, dtype_name, raw_bytes]`` (C order);
type 2 = native complex, type 3 = numpy scalar. Arrays over Flax's chunk limit are stored as a map
``{'__msgpack_chunked_array__': True, 'shape': {'0': d0, ...}, 'chunks': {'0': arr, '1': arr, ...}}`` of flat pieces.

The file is memory-mapped and parsed in place: each leaf is yielded as a read-only numpy view on the mapping, and
its pages are dropped from the process once the consumer moves on, so loading a 10 GB checkpoint into a model keeps
host memory near one copy (the model's).
"""
from __future__ import annotations

import mmap
import struct
from pathlib import Path
from typing import Iterator

import numpy as np

EXT_NDARRAY, EXT_COMPLEX, EXT_SCALAR = 1, 2, 3
CHUNKED_MARKER = "__msgpack_chunked_array__"
PAGE = mmap.PAGESIZE


class _Ext:
    __slots__ = ("code", "start", "end")

    def __init__(self, code, start, end):
        self.code, self.start, self.end = code, start, end


class _Reader:
    """A msgpack decoder over a buffer that returns ext records and binaries as offsets, not copies."""

    def __init__(self, buf, pos: int = 0):
        self.buf = buf
        self.pos = pos

    def _take(self, n: int) -> int:
        start = self.pos
        self.pos += n
        if self.pos > len(self.buf):
            raise ValueError("truncated msgpack data")
        return start

    def _unpack(self, fmt: str):
        size = struct.calcsize(fmt)
        return struct.unpack_from(fmt, self.buf, self._take(size))[0]

    def header(self):
        """('map'|'array'|'ext'|'value', payload) for the next object."""
        b = self.buf[self._take(1)]
        if b <= 0x7F:
            return "value", b
        if b >= 0xE0:
            return "value", b - 0x100
        if 0x80 <= b <= 0x8F:
            return "map", b & 0x0F
        if 0x90 <= b <= 0x9F:
            return "array", b & 0x0F
        if 0xA0 <= b <= 0xBF:
            return "value", self._str(b & 0x1F)
        simple = {0xC0: None, 0xC2: False, 0xC3: True}
        if b in simple:
            return "value", simple[b]
        if b in (0xC4, 0xC5, 0xC6):  # bin 8/16/32: keep as offsets into the buffer
            n = self._unpack({0xC4: ">B", 0xC5: ">H", 0xC6: ">I"}[b])
            start = self._take(n)
            return "value", memoryview(self.buf)[start:start + n]
        if b in (0xC7, 0xC8, 0xC9):
            n = self._unpack({0xC7: ">B", 0xC8: ">H", 0xC9: ">I"}[b])
            code = self._unpack(">b")
            start = self._take(n)
            return "ext", _Ext(code, start, start + n)
        fixed = {0xCA: ">f", 0xCB: ">d", 0xCC: ">B", 0xCD: ">H", 0xCE: ">I", 0xCF: ">Q",
                 0xD0: ">b", 0xD1: ">h", 0xD2: ">i", 0xD3: ">q"}
        if b in fixed:
            return "value", self._unpack(fixed[b])
        if 0xD4 <= b <= 0xD8:  # fixext 1/2/4/8/16
            n = 1 << (b - 0xD4)
            code = self._unpack(">b")
            start = self._take(n)
            return "ext", _Ext(code, start, start + n)
        if b in (0xD9, 0xDA, 0xDB):
            return "value", self._str(self._unpack({0xD9: ">B", 0xDA: ">H", 0xDB: ">I"}[b]))
        if b in (0xDC, 0xDD):
            return "array", self._unpack(">H" if b == 0xDC else ">I")
        if b in (0xDE, 0xDF):
            return "map", self._unpack(">H" if b == 0xDE else ">I")
        raise ValueError(f"unsupported msgpack byte 0x{b:02x} at offset {self.pos - 1}")

    def _str(self, n: int) -> str:
        start = self._take(n)
        return bytes(self.buf[start:start + n]).decode("utf-8")

    def value(self):
        """Decode one whole object (used for keys and small ext payloads)."""
        kind, payload = self.header()
        if kind == "value":
            return payload
        if kind == "array":
            return [self.value() for _ in range(payload)]
        if kind == "map":
            return {self.value(): self.value() for _ in range(payload)}
        return payload


def _decode_ext(buf, ext: _Ext):
    if ext.code == EXT_NDARRAY:
        shape, dtype, data = _Reader(buf, ext.start).value()
        return np.frombuffer(data, dtype=np.dtype(dtype)).reshape(shape)
    if ext.code in (EXT_COMPLEX, EXT_SCALAR):
        return _Reader(buf, ext.start).value()
    raise ValueError(f"unknown flax msgpack ext type {ext.code}")


def _walk(reader: _Reader, prefix: tuple) -> Iterator[tuple[tuple, object, tuple[int, int] | None]]:
    kind, payload = reader.header()
    if kind == "map":
        for index in range(payload):
            key = str(reader.value())
            if index == 0 and key == CHUNKED_MARKER:  # a leaf split into pieces (the marker key comes first)
                yield prefix, _read_chunked(reader, payload - 1), None
                return
            yield from _walk(reader, prefix + (key,))
    elif kind == "ext":
        yield prefix, _decode_ext(reader.buf, payload), (payload.start, payload.end)
    elif kind == "array":
        for i in range(payload):
            yield from _walk(reader, prefix + (str(i),))
    else:
        yield prefix, payload, None


def iter_leaves(path) -> Iterator[tuple[tuple[str, ...], np.ndarray]]:
    """Yield (key path, array) for every leaf, in file order. Arrays are read-only views valid until the next step:
    copy what you keep (e.g. into a torch parameter) before advancing."""
    with open(path, "rb") as f:
        if Path(path).stat().st_size == 0:
            raise ValueError(f"{path}: empty file, not a flax msgpack checkpoint")
        mapped = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
    try:
        reader = _Reader(mapped)
        for key, value, span in _walk(reader, ()):
            yield key, np.asarray(value)
            del value
            if span is not None:
                _release(mapped, *span)
    finally:
        _close(mapped)


def _close(mapped: mmap.mmap):
    """Unmap now unless the consumer still holds a view (typically the loop variable of the last leaf); such a
    mapping is unmapped when its last view is garbage-collected."""
    try:
        mapped.close()
    except BufferError:
        pass


def _read_chunked(reader: _Reader, entries: int) -> np.ndarray:
    """Flax splits leaves over its chunk limit (1 GiB) into {marker: True, 'shape': {'0': d0, ...},
    'chunks': {'0': flat piece, ...}}; the marker key has been read, its value and the other entries follow."""
    reader.value()  # the marker's value (True)
    shape, pieces = None, {}
    for _ in range(entries):
        field = reader.value()
        if field == "shape":
            dims = reader.value()  # flax writes tuples as {'0': d0, '1': d1, ...}
            shape = tuple(int(dims[k]) for k in sorted(dims, key=int)) if isinstance(dims, dict) else tuple(dims)
        elif field == "chunks":
            kind, count = reader.header()
            if kind != "map":
                raise ValueError(f"chunked array: 'chunks' is a {kind}, expected a map")
            for _ in range(count):
                index = int(reader.value())
                kind, ext = reader.header()
                if kind != "ext":
                    raise ValueError(f"chunked array: chunk {index} is a {kind}, expected an array")
                pieces[index] = np.array(_decode_ext(reader.buf, ext)).reshape(-1)
        else:
            reader.value()
    if shape is None or sorted(pieces) != list(range(len(pieces))):
        raise ValueError("chunked array without a shape or with missing chunks")
    flat = np.concatenate([pieces[i] for i in range(len(pieces))])
    if flat.size != int(np.prod(shape)):
        raise ValueError(f"chunked array: {flat.size} values for shape {shape}")
    return flat.reshape(shape)


def _release(mapped: mmap.mmap, start: int, end: int):
    """Drop the pages of a consumed tensor from this process (the file stays intact on disk)."""
    lo = (start // PAGE) * PAGE
    hi = (end // PAGE) * PAGE
    if hi > lo and hasattr(mapped, "madvise"):
        mapped.madvise(mmap.MADV_DONTNEED, lo, hi - lo)


def read_all(path) -> dict[str, np.ndarray]:
    """Every leaf as a copied array keyed by '/'-joined path (small files and tests)."""
    return {"/".join(key): np.array(value) for key, value in iter_leaves(path)}

