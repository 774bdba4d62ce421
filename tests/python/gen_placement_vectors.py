#!/usr/bin/python3
"""Writes tests/data/placement_vectors.json: expected chunking and placement.

An independent, deliberately plain implementation of the rule in
protos/dcasgd/v1/ps.proto with Python integers (no numpy, nothing shared with
the client or the server): FNV-1a 64 over the UTF-8 bytes, chunk i on shard
((hash + i) mod 2^64) mod N. The C++ test tests/core/placement_vectors_test.cc
and the Python test tests/python/test_placement.py both check against it.

File format: a JSON array with exactly one object per line, so that the C++
test can read it line by line without a JSON library. The "name" field comes
last in every object (it is the only free-form string); C++ reads the name
from "name_utf8_hex".
  kind "tensor": a declared tensor; "chunk_shards" lists the owning shard of
    every chunk in order. chunk_elements 0 means the default, 65536.
  kind "probe": ShardOfChunk for one (possibly huge) chunk index, including
    indices where hash + index wraps past 2^64.

Usage: gen_placement_vectors.py [OUT]   (default: print to stdout)
"""

import json
import sys

DEFAULT_CHUNK_ELEMENTS = 65536


def fnv1a64(data):
    h = 14695981039346656037  # 0xcbf29ce484222325
    for byte in data:
        h = h ^ byte
        h = (h * 1099511628211) % (2 ** 64)  # prime 0x100000001b3
    return h


def shard_of(name_bytes, chunk_index, shard_count):
    return ((fnv1a64(name_bytes) + chunk_index) % (2 ** 64)) % shard_count


NAMES = [
    "",
    "a",
    "softmax/w",
    "softmax/b",
    "mlp/layer1/weights:0",
    "θ/权重/😀",
    'quote " backslash \\ tab \t end',
    "long/" + "abcdefghij" * 20 + "/tail",
]

# (shape, declared chunk_elements)
CONFIGS = [
    ([1], 1), ([2], 1), ([5], 1), ([7], 1), ([2, 3], 1),
    ([1], 3), ([2], 3), ([3], 3), ([4], 3), ([5], 3), ([6], 3), ([7], 3), ([2, 5], 3),
    ([3, 3, 1], 3),
    ([1], 65536), ([65535], 65536), ([65536], 65536), ([65537], 65536),
    ([3, 65536], 65536), ([196609], 65536), ([784, 256], 65536),
    ([], 0), ([784, 10], 0), ([10], 0), ([2, 65536], 0), ([131073], 0),
]


def tensor_entries():
    entries = []
    for c, (shape, chunk_elements) in enumerate(CONFIGS):
        # Two names per configuration, rotating, so every name meets several
        # chunk sizes without a full cross product.
        for name in (NAMES[c % len(NAMES)], NAMES[(c + 3) % len(NAMES)]):
            raw = name.encode("utf-8")
            elements = 1
            for d in shape:
                elements *= d
            resolved = chunk_elements if chunk_elements else DEFAULT_CHUNK_ELEMENTS
            num_chunks = (elements + resolved - 1) // resolved
            last = elements - (num_chunks - 1) * resolved
            for shard_count in range(1, 6):
                entries.append({
                    "kind": "tensor",
                    "name_utf8_hex": raw.hex(),
                    "fnv1a64": "%016x" % fnv1a64(raw),
                    "shape": shape,
                    "chunk_elements": chunk_elements,
                    "resolved_chunk_elements": resolved,
                    "num_elements": elements,
                    "num_chunks": num_chunks,
                    "last_chunk_elements": last,
                    "shard_count": shard_count,
                    "chunk_shards": [shard_of(raw, i, shard_count) for i in range(num_chunks)],
                    "name": name,
                })
    return entries


def probe_entries():
    entries = []
    for name in NAMES:
        raw = name.encode("utf-8")
        h = fnv1a64(raw)
        # Indices around the wrap point 2^64 - h, plus the extremes.
        indices = sorted({0, 1, 2 ** 32, 2 ** 63, 2 ** 64 - 1} |
                         {(2 ** 64 - h + k) % (2 ** 64) for k in (-2, -1, 0, 1, 2)})
        for chunk_index in indices:
            for shard_count in (1, 3, 5, 7, 1000):
                entries.append({
                    "kind": "probe",
                    "name_utf8_hex": raw.hex(),
                    "fnv1a64": "%016x" % h,
                    "chunk_index": chunk_index,
                    "shard_count": shard_count,
                    "shard": shard_of(raw, chunk_index, shard_count),
                    "name": name,
                })
    return entries


def render():
    lines = [json.dumps(e, ensure_ascii=False, separators=(", ", ": "))
             for e in tensor_entries() + probe_entries()]
    return "[\n" + ",\n".join(lines) + "\n]\n"


def main(argv):
    text = render()
    if len(argv) > 1:
        with open(argv[1], "w", encoding="utf-8") as f:
            f.write(text)
    else:
        sys.stdout.write(text)


if __name__ == "__main__":
    main(sys.argv)
