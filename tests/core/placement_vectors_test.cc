// Checks core/placement.h and TensorSpec chunking against
// tests/data/placement_vectors.json, which an independent implementation
// (tests/python/gen_placement_vectors.py) wrote and which the Python client's
// test checks too: every client and the server agree on the wire contract.
//
// The file is a JSON array with one object per line; this test reads the
// fields it needs with a minimal field scanner (no JSON library in the C++
// dependencies). Tensor names come from "name_utf8_hex".
#include <algorithm>
#include <cstdint>
#include <fstream>
#include <limits>
#include <string>
#include <vector>

#include "absl/strings/escaping.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/string_view.h"
#include "core/placement.h"
#include "core/tensor.h"
#include "gtest/gtest.h"

namespace dcasgd {
namespace {

struct TensorVector {
  std::string name;
  uint64_t fnv = 0;
  std::vector<int64_t> shape;
  uint32_t chunk_elements = 0;
  uint32_t resolved_chunk_elements = 0;
  uint64_t num_elements = 0;
  uint64_t num_chunks = 0;
  uint64_t last_chunk_elements = 0;
  uint32_t shard_count = 0;
  std::vector<uint32_t> chunk_shards;
  int line = 0;
};

struct ProbeVector {
  std::string name;
  uint64_t fnv = 0;
  uint64_t chunk_index = 0;
  uint32_t shard_count = 0;
  uint32_t shard = 0;
  int line = 0;
};

struct Vectors {
  std::vector<TensorVector> tensors;
  std::vector<ProbeVector> probes;
  std::string error;  // non-empty when the file could not be read
};

// The raw text of field `key` in a one-line JSON object: an array with its
// brackets, a string without its quotes (no escapes: only used for hex
// fields), or a number. Fields other than "name" never contain quotes, and
// "name" comes last, so the first match of "key": is the field itself.
bool FieldText(absl::string_view line, absl::string_view key, absl::string_view* out) {
  const std::string pattern = absl::StrCat("\"", key, "\": ");
  const size_t at = line.find(pattern);
  if (at == absl::string_view::npos) return false;
  absl::string_view rest = line.substr(at + pattern.size());
  if (rest.empty()) return false;
  size_t end;
  if (rest[0] == '[') {
    end = rest.find(']');
    if (end == absl::string_view::npos) return false;
    *out = rest.substr(0, end + 1);
  } else if (rest[0] == '"') {
    end = rest.find('"', 1);
    if (end == absl::string_view::npos) return false;
    *out = rest.substr(1, end - 1);
  } else {
    end = rest.find_first_of(",}");
    if (end == absl::string_view::npos) return false;
    *out = rest.substr(0, end);
  }
  return true;
}

template <typename T>
bool Number(absl::string_view line, absl::string_view key, T* out) {
  absl::string_view text;
  uint64_t value = 0;
  if (!FieldText(line, key, &text) || !absl::SimpleAtoi(text, &value)) return false;
  if (value > std::numeric_limits<T>::max()) return false;
  *out = static_cast<T>(value);
  return true;
}

template <typename T>
bool NumberList(absl::string_view line, absl::string_view key, std::vector<T>* out) {
  absl::string_view text;
  if (!FieldText(line, key, &text)) return false;
  text.remove_prefix(1);
  text.remove_suffix(1);
  out->clear();
  if (text.empty()) return true;
  for (absl::string_view item : absl::StrSplit(text, ',')) {
    int64_t value = 0;
    if (!absl::SimpleAtoi(item, &value) || value < 0) return false;
    out->push_back(static_cast<T>(value));
  }
  return true;
}

bool NameAndHash(absl::string_view line, std::string* name, uint64_t* fnv) {
  absl::string_view hex;
  absl::string_view fnv_hex;
  if (!FieldText(line, "name_utf8_hex", &hex) || !FieldText(line, "fnv1a64", &fnv_hex) ||
      hex.size() % 2 != 0 || fnv_hex.size() != 16) {
    return false;
  }
  *name = absl::HexStringToBytes(hex);
  return absl::SimpleHexAtoi(fnv_hex, fnv);
}

Vectors Load() {
  Vectors v;
  const std::string path = std::string(DCASGD_SOURCE_DIR) + "/tests/data/placement_vectors.json";
  std::ifstream in(path);
  if (!in) {
    v.error = "cannot open " + path;
    return v;
  }
  std::string line;
  int number = 0;
  while (std::getline(in, line)) {
    ++number;
    if (line == "[" || line == "]" || line.empty()) continue;
    const std::string where = absl::StrCat(path, ":", number);
    if (line.find("\"kind\": \"tensor\"") != std::string::npos) {
      TensorVector t;
      t.line = number;
      if (!NameAndHash(line, &t.name, &t.fnv) || !NumberList(line, "shape", &t.shape) ||
          !Number(line, "chunk_elements", &t.chunk_elements) ||
          !Number(line, "resolved_chunk_elements", &t.resolved_chunk_elements) ||
          !Number(line, "num_elements", &t.num_elements) ||
          !Number(line, "num_chunks", &t.num_chunks) ||
          !Number(line, "last_chunk_elements", &t.last_chunk_elements) ||
          !Number(line, "shard_count", &t.shard_count) ||
          !NumberList(line, "chunk_shards", &t.chunk_shards)) {
        v.error = "unparsable tensor vector at " + where;
        return v;
      }
      v.tensors.push_back(std::move(t));
    } else if (line.find("\"kind\": \"probe\"") != std::string::npos) {
      ProbeVector p;
      p.line = number;
      if (!NameAndHash(line, &p.name, &p.fnv) || !Number(line, "chunk_index", &p.chunk_index) ||
          !Number(line, "shard_count", &p.shard_count) || !Number(line, "shard", &p.shard)) {
        v.error = "unparsable probe vector at " + where;
        return v;
      }
      v.probes.push_back(std::move(p));
    } else {
      v.error = "unknown kind at " + where;
      return v;
    }
  }
  return v;
}

const Vectors& TheVectors() {
  static const Vectors* vectors = new Vectors(Load());
  return *vectors;
}

TEST(PlacementVectors, FileParsesAndCoversTheEdgeCases) {
  const Vectors& v = TheVectors();
  ASSERT_EQ(v.error, "");
  ASSERT_GE(v.tensors.size(), 100u);
  ASSERT_GE(v.probes.size(), 100u);
  bool empty_name = false, non_ascii = false, long_name = false, default_chunk = false;
  bool wraps = false;
  uint32_t max_shards = 0;
  for (const TensorVector& t : v.tensors) {
    empty_name |= t.name.empty();
    for (unsigned char c : t.name) non_ascii |= c >= 0x80;
    long_name |= t.name.size() >= 200;
    default_chunk |= t.chunk_elements == 0;
    max_shards = std::max(max_shards, t.shard_count);
  }
  for (const ProbeVector& p : v.probes) {
    wraps |= p.chunk_index > std::numeric_limits<uint64_t>::max() - p.fnv;
  }
  EXPECT_TRUE(empty_name);
  EXPECT_TRUE(non_ascii);
  EXPECT_TRUE(long_name);
  EXPECT_TRUE(default_chunk);
  EXPECT_TRUE(wraps);
  EXPECT_EQ(max_shards, 5u);
}

TEST(PlacementVectors, Fnv1a64MatchesReference) {
  const Vectors& v = TheVectors();
  ASSERT_EQ(v.error, "");
  for (const TensorVector& t : v.tensors) {
    EXPECT_EQ(Fnv1a64(t.name), t.fnv) << "line " << t.line;
  }
  for (const ProbeVector& p : v.probes) {
    EXPECT_EQ(Fnv1a64(p.name), p.fnv) << "line " << p.line;
  }
}

TEST(PlacementVectors, ChunkingMatchesReference) {
  const Vectors& v = TheVectors();
  ASSERT_EQ(v.error, "");
  for (const TensorVector& t : v.tensors) {
    SCOPED_TRACE(absl::StrCat("line ", t.line));
    TensorSpec spec;
    spec.name = t.name.empty() ? "placeholder" : t.name;  // validation needs a name
    spec.shape = t.shape;
    spec.chunk_elements = t.chunk_elements;
    const TensorSpec resolved = ResolveDefaults(spec);
    ASSERT_EQ(resolved.chunk_elements, t.resolved_chunk_elements);
    ASSERT_EQ(resolved.num_elements(), t.num_elements);
    ASSERT_EQ(resolved.num_chunks(), t.num_chunks);
    ASSERT_EQ(t.chunk_shards.size(), t.num_chunks);
    uint64_t covered = 0;
    for (uint64_t i = 0; i < t.num_chunks; ++i) {
      EXPECT_EQ(resolved.chunk_offset(i), covered);
      const uint64_t expected_length =
          i + 1 == t.num_chunks ? t.last_chunk_elements : t.resolved_chunk_elements;
      EXPECT_EQ(resolved.chunk_length(i), expected_length) << "chunk " << i;
      covered += resolved.chunk_length(i);
    }
    EXPECT_EQ(covered, t.num_elements);
  }
}

TEST(PlacementVectors, ShardOfChunkMatchesReference) {
  const Vectors& v = TheVectors();
  ASSERT_EQ(v.error, "");
  for (const TensorVector& t : v.tensors) {
    for (uint64_t i = 0; i < t.chunk_shards.size(); ++i) {
      EXPECT_EQ(ShardOfChunk(t.name, i, t.shard_count), t.chunk_shards[i])
          << "line " << t.line << " chunk " << i;
    }
  }
}

TEST(PlacementVectors, ProbesIncludingWrapAroundMatchReference) {
  const Vectors& v = TheVectors();
  ASSERT_EQ(v.error, "");
  for (const ProbeVector& p : v.probes) {
    EXPECT_EQ(ShardOfChunk(p.name, p.chunk_index, p.shard_count), p.shard)
        << "line " << p.line << " chunk " << p.chunk_index << " of " << p.shard_count;
  }
}

}  // namespace
}  // namespace dcasgd
