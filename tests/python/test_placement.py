"""The Python client's chunking and placement against
tests/data/placement_vectors.json (see gen_placement_vectors.py)."""

import json
import os
import unittest

import numpy as np

import dcasgd

_VECTORS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "data",
                        "placement_vectors.json")


def _load():
    with open(_VECTORS, encoding="utf-8") as f:
        entries = json.load(f)
    return ([e for e in entries if e["kind"] == "tensor"],
            [e for e in entries if e["kind"] == "probe"])


class PlacementVectorsTest(unittest.TestCase):

    @classmethod
    def setUpClass(cls):
        cls.tensors, cls.probes = _load()

    def test_file_covers_the_edge_cases(self):
        self.assertGreaterEqual(len(self.tensors), 100)
        self.assertGreaterEqual(len(self.probes), 100)
        names = {t["name"] for t in self.tensors}
        self.assertIn("", names)
        self.assertTrue(any(not n.isascii() for n in names))
        self.assertTrue(any(len(n) >= 200 for n in names))
        self.assertEqual({t["shard_count"] for t in self.tensors}, {1, 2, 3, 4, 5})
        self.assertTrue({1, 3, 65536, 0} <= {t["chunk_elements"] for t in self.tensors})
        self.assertTrue(any(p["chunk_index"] + int(p["fnv1a64"], 16) >= 2 ** 64
                            for p in self.probes))

    def test_fnv1a64_matches_reference(self):
        for entry in self.tensors + self.probes:
            with self.subTest(name=entry["name"]):
                self.assertEqual(entry["name"].encode("utf-8").hex(), entry["name_utf8_hex"])
                self.assertEqual(dcasgd.fnv1a64(entry["name"]), int(entry["fnv1a64"], 16))
                self.assertEqual(dcasgd.fnv1a64(bytes.fromhex(entry["name_utf8_hex"])),
                                 int(entry["fnv1a64"], 16))

    def test_layout_chunking_matches_reference(self):
        for t in self.tensors:
            with self.subTest(name=t["name"], shape=t["shape"], chunk=t["chunk_elements"]):
                layout = dcasgd.Layout(t["name"], t["shape"], t["chunk_elements"])
                self.assertEqual(layout.chunk_elements, t["resolved_chunk_elements"])
                self.assertEqual(layout.num_elements, t["num_elements"])
                self.assertEqual(layout.num_chunks, t["num_chunks"])
                covered = 0
                for i in range(layout.num_chunks):
                    offset, length = layout.chunk_range(i)
                    self.assertEqual(offset, covered)
                    expected = (t["last_chunk_elements"] if i + 1 == layout.num_chunks
                                else t["resolved_chunk_elements"])
                    self.assertEqual(length, expected)
                    covered += length
                self.assertEqual(covered, t["num_elements"])

    def test_chunk_shards_match_reference(self):
        for t in self.tensors:
            with self.subTest(name=t["name"], shards=t["shard_count"]):
                layout = dcasgd.Layout(t["name"], t["shape"], t["chunk_elements"])
                self.assertEqual(layout.chunk_shards(t["shard_count"]).tolist(),
                                 t["chunk_shards"])
                self.assertEqual([dcasgd.shard_of_chunk(t["name"], i, t["shard_count"])
                                  for i in range(t["num_chunks"])], t["chunk_shards"])

    def test_probes_including_wrap_around_match_reference(self):
        for p in self.probes:
            with self.subTest(name=p["name"], chunk=p["chunk_index"], shards=p["shard_count"]):
                self.assertEqual(dcasgd.shard_of_chunk(p["name"], p["chunk_index"],
                                                       p["shard_count"]), p["shard"])
                layout = dcasgd.Layout(p["name"], [1], 1)
                vectorised = layout.shards_of_chunks(np.array([p["chunk_index"]], np.uint64),
                                                     p["shard_count"])
                self.assertEqual(vectorised.tolist(), [p["shard"]])

    def test_shard_count_zero_is_rejected(self):
        with self.assertRaises(ValueError):
            dcasgd.shard_of_chunk("a", 0, 0)
        with self.assertRaises(ValueError):
            dcasgd.Layout("a", [3], 1).chunk_shards(0)


if __name__ == "__main__":
    unittest.main()
