"""Chunking and placement, exactly as protos/dcasgd/v1/ps.proto states them.

A tensor of E elements is split into ceil(E / chunk_elements) chunks; chunk i
holds elements [i * chunk_elements, min(E, (i + 1) * chunk_elements)) and lives
on shard (fnv1a64(utf8(name)) + i) mod N, the sum wrapping mod 2^64.
"""

import numpy as np

DEFAULT_CHUNK_ELEMENTS = 65536

_FNV_OFFSET_BASIS = 0xCBF29CE484222325
_FNV_PRIME = 0x100000001B3
_MASK64 = (1 << 64) - 1


def fnv1a64(name):
    """64-bit FNV-1a of `name` (str: its UTF-8 bytes; or bytes) as an int."""
    data = name.encode("utf-8") if isinstance(name, str) else bytes(name)
    h = _FNV_OFFSET_BASIS
    for byte in data:
        h = ((h ^ byte) * _FNV_PRIME) & _MASK64
    return h


def shard_of_chunk(name, chunk_index, shard_count):
    """The shard owning chunk `chunk_index` of tensor `name` among `shard_count`."""
    if shard_count < 1:
        raise ValueError("shard_count must be >= 1")
    return ((fnv1a64(name) + int(chunk_index)) & _MASK64) % shard_count


class Layout:
    """How one declared tensor is split: shape, element count, chunk size.

    Immutable after construction; safe to share between threads.
    """

    __slots__ = ("name", "shape", "num_elements", "chunk_elements", "num_chunks", "_hash")

    def __init__(self, name, shape, chunk_elements):
        self.name = name
        self.shape = tuple(int(d) for d in shape)
        self.num_elements = int(np.prod(self.shape, dtype=np.int64)) if self.shape else 1
        self.chunk_elements = int(chunk_elements) or DEFAULT_CHUNK_ELEMENTS
        self.num_chunks = -(-self.num_elements // self.chunk_elements)
        self._hash = fnv1a64(name)

    def chunk_range(self, chunk_index):
        """(offset, length) of chunk `chunk_index` in the flat tensor."""
        begin = chunk_index * self.chunk_elements
        return begin, min(self.chunk_elements, self.num_elements - begin)

    def chunk_shards(self, shard_count):
        """np.ndarray[uint32] with the owning shard of every chunk, in order."""
        return self.shards_of_chunks(np.arange(self.num_chunks, dtype=np.uint64), shard_count)

    def shards_of_chunks(self, chunk_indices, shard_count):
        """np.ndarray[uint32]: the owning shard of each of `chunk_indices`.

        Vectorised: uint64 addition in numpy wraps mod 2^64 like the contract.
        """
        if shard_count < 1:
            raise ValueError("shard_count must be >= 1")
        indices = np.asarray(chunk_indices, dtype=np.uint64)
        with np.errstate(over="ignore"):
            sums = np.uint64(self._hash) + indices
        return (sums % np.uint64(shard_count)).astype(np.uint32)

    def chunks_of_shard(self, shard, shard_count):
        """Chunk indices (np.ndarray[int64]) owned by `shard`, ascending."""
        return np.nonzero(self.chunk_shards(shard_count) == shard)[0]

    def __repr__(self):
        return "Layout(%r, shape=%r, chunk_elements=%d)" % (self.name, self.shape,
                                                            self.chunk_elements)
