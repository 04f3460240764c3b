"""Write Flax msgpack checkpoints (the format `flax_msgpack.iter_leaves` reads) without JAX or Flax.

Used to save tiny models in the real file layout (tests, unseen-config round trips) and to make large synthetic
checkpoints for memory benchmarks. Leaves are produced lazily and streamed to disk one at a time, so writing a
multi-gigabyte file needs about one tensor of memory. Arrays are never chunked (Flax only chunks leaves over 1 GiB).
"""
from __future__ import annotations

import struct
from pathlib import Path
from typing import Callable, Iterable, Union

import msgpack
import numpy as np

from dalle_flow.runtime.flax_msgpack import EXT_NDARRAY

Leaf = Union[np.ndarray, Callable[[], np.ndarray]]


def _nest(items: Iterable[tuple[tuple[str, ...], Leaf]]) -> dict:
    tree: dict = {}
    for key, leaf in items:
        node = tree
        for part in key[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ValueError(f"key {'/'.join(key)} runs through a leaf")
        if key[-1] in node:
            raise ValueError(f"duplicate key {'/'.join(key)}")
        node[key[-1]] = leaf
    return tree


def _write_array(f, array: np.ndarray):
    array = np.asarray(array, order="C")  # (ascontiguousarray would turn a 0-d array into 1-d)
    if array.dtype.byteorder == ">":
        array = array.astype(array.dtype.newbyteorder("<"))
    nbytes = array.nbytes
    head = (msgpack.packb(list(array.shape)) + msgpack.packb(array.dtype.name)
            + b"\xc6" + struct.pack(">I", nbytes))  # bin 32 header of the raw bytes
    payload_len = 1 + len(head) + nbytes  # 1 = fixarray(3) marker
    f.write(b"\xc9" + struct.pack(">Ib", payload_len, EXT_NDARRAY))  # ext 32
    f.write(b"\x93" + head)
    f.write(array.reshape(-1).view(np.uint8).data)


def _write_node(f, packer: msgpack.Packer, node):
    if isinstance(node, dict):
        f.write(packer.pack_map_header(len(node)))
        for key in sorted(node):
            f.write(packer.pack(key))
            _write_node(f, packer, node[key])
        return
    array = node() if callable(node) else node
    _write_array(f, np.asarray(array))


def write_flax_msgpack(path, items: Iterable[tuple[tuple[str, ...], Leaf]]) -> Path:
    """Write leaves given as (key path, array or zero-argument callable returning the array). Callables are called
    one at a time while writing, so a caller can generate or convert each tensor on demand."""
    path = Path(path)
    tree = _nest(items)
    packer = msgpack.Packer(use_bin_type=True)
    with open(path, "wb") as f:
        _write_node(f, packer, tree)
    return path
