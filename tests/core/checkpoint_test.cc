#include "core/checkpoint.h"

#include <signal.h>
#include <stdlib.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <limits>
#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace dcasgd {
namespace {

using ::testing::HasSubstr;
using ::testing::IsEmpty;
using ::testing::UnorderedElementsAre;

uint32_t Bits(float f) {
  uint32_t b;
  std::memcpy(&b, &f, sizeof(b));
  return b;
}

std::vector<uint32_t> Bits(const std::vector<float>& v) {
  std::vector<uint32_t> out;
  for (float f : v) out.push_back(Bits(f));
  return out;
}

// Field-by-field comparison on bit patterns, so -0.0f vs 0.0f or a changed
// denormal would fail where float == would not.
void ExpectBitIdentical(const ShardSnapshot& want, const ShardSnapshot& got) {
  EXPECT_EQ(want.shard_index, got.shard_index);
  EXPECT_EQ(want.shard_count, got.shard_count);
  EXPECT_EQ(want.version, got.version);
  ASSERT_EQ(want.tensors.size(), got.tensors.size());
  for (size_t t = 0; t < want.tensors.size(); ++t) {
    const TensorState& w = want.tensors[t];
    const TensorState& g = got.tensors[t];
    SCOPED_TRACE(w.spec.name);
    EXPECT_EQ(w.spec, g.spec);
    EXPECT_EQ(Bits(w.spec.init.a), Bits(g.spec.init.a));
    EXPECT_EQ(Bits(w.spec.init.b), Bits(g.spec.init.b));
    EXPECT_EQ(Bits(w.spec.init.values), Bits(g.spec.init.values));
    ASSERT_EQ(w.chunks.size(), g.chunks.size());
    for (size_t c = 0; c < w.chunks.size(); ++c) {
      EXPECT_EQ(w.chunks[c].index, g.chunks[c].index);
      EXPECT_EQ(Bits(w.chunks[c].weights), Bits(g.chunks[c].weights));
      EXPECT_EQ(Bits(w.chunks[c].mean_square), Bits(g.chunks[c].mean_square));
      EXPECT_EQ(Bits(w.chunks[c].momentum), Bits(g.chunks[c].momentum));
      EXPECT_EQ(Bits(w.chunks[c].gap_scale), Bits(g.chunks[c].gap_scale));
    }
  }
}

TensorSpec Spec(std::string name, std::vector<int64_t> shape, uint32_t chunk_elements,
                Initializer::Kind kind, float a = 0, float b = 0, uint64_t seed = 0) {
  TensorSpec spec;
  spec.name = std::move(name);
  spec.shape = std::move(shape);
  spec.chunk_elements = chunk_elements;
  spec.init.kind = kind;
  spec.init.a = a;
  spec.init.b = b;
  spec.init.seed = seed;
  return spec;
}

// A small snapshot that uses every field: every initializer kind, chunks with
// and without optimizer vectors, a short last chunk, and awkward floats.
ShardSnapshot RichSnapshot() {
  const float denorm = std::numeric_limits<float>::denorm_min();
  ShardSnapshot s;
  s.shard_index = 1;
  s.shard_count = 3;
  s.version = 0x0102030405060708ULL;

  TensorState w;  // 15 elements in chunks of 4: lengths 4, 4, 4, 3
  w.spec = Spec("layer1/weights", {3, 5}, 4, Initializer::Kind::kUniform, -0.5f, 0.5f,
                0xdeadbeefcafeULL);
  w.chunks.push_back({0, {-0.0f, denorm, -denorm, 1.0f}, {0.0f, 1e-30f, 2.0f, 3.0f}, {}, {}});
  w.chunks.push_back({3,
                      {std::numeric_limits<float>::max(), std::numeric_limits<float>::lowest(),
                       std::numeric_limits<float>::min()},
                      {1, 2, 3},
                      {-1, -2, -0.0f},
                      {}});
  s.tensors.push_back(w);

  TensorState bias;  // a scalar
  bias.spec = Spec("bias", {}, 1, Initializer::Kind::kConstant, 0.25f);
  bias.chunks.push_back({0, {7.0f}, {}, {}, {}});
  s.tensors.push_back(bias);

  TensorState values;  // explicit values, no owned chunk on this shard
  values.spec = Spec("embedding", {2, 2}, 2, Initializer::Kind::kValues);
  values.spec.init.values = {1.0f, -0.0f, denorm, 4.0f};
  s.tensors.push_back(values);

  TensorState zeros;
  zeros.spec = Spec("zeros", {4}, 65536, Initializer::Kind::kZeros);
  zeros.chunks.push_back({0, {0, 0, 0, 0}, {}, {1, 1, 1, 1}, {-1.0f, 0.0f, denorm, 2.5f}});
  s.tensors.push_back(zeros);

  TensorState normal;
  normal.spec = Spec("normal", {2}, 1, Initializer::Kind::kNormal, 0.0f, 0.01f, 42);
  normal.chunks.push_back({1, {0.5f}, {0.25f}, {0.125f}, {}});
  s.tensors.push_back(normal);
  return s;
}

std::string ReadFileBytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

void WriteFileBytes(const std::string& path, const std::string& bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  ASSERT_TRUE(out.good()) << path;
}

// An independent encoder following docs/checkpoint-format.md, to check the
// layout and to build files the writer would refuse to produce.
class LayoutEncoder {
 public:
  LayoutEncoder& U32(uint32_t v) {
    for (int i = 0; i < 4; ++i) bytes_.push_back(static_cast<char>(v >> (8 * i)));
    return *this;
  }
  LayoutEncoder& U64(uint64_t v) {
    for (int i = 0; i < 8; ++i) bytes_.push_back(static_cast<char>(v >> (8 * i)));
    return *this;
  }
  LayoutEncoder& F32(float f) { return U32(Bits(f)); }
  LayoutEncoder& Raw(const std::string& s) {
    bytes_ += s;
    return *this;
  }
  LayoutEncoder& Header(uint32_t format_version, uint64_t tensors) {
    return Raw("DCASGDCK").U32(format_version).U32(0).U32(1).U64(5).U64(tensors);
  }
  // Appends the CRC-32 of everything so far.
  std::string Finish() const {
    const uLong crc = crc32_z(crc32_z(0L, Z_NULL, 0), reinterpret_cast<const Bytef*>(bytes_.data()),
                              bytes_.size());
    LayoutEncoder out = *this;
    out.U32(static_cast<uint32_t>(crc));
    return out.bytes_;
  }

 private:
  std::string bytes_;
};

// The spec "t", shape [3], chunk_elements 2, constant 1.5, seed 9.
LayoutEncoder& SmallSpec(LayoutEncoder& e) {
  return e.U32(1).Raw("t").U32(1).U64(3).U32(2).U32(1).F32(1.5f).F32(0).U64(9).U64(0);
}

class CheckpointTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string tmpl = ::testing::TempDir() + "/checkpoint_test.XXXXXX";
    ASSERT_NE(mkdtemp(tmpl.data()), nullptr) << std::strerror(errno);
    dir_ = tmpl;
  }
  void TearDown() override {
    chmod(dir_.c_str(), 0755);
    std::filesystem::remove_all(dir_);
  }

  std::string Path(const std::string& name) const { return dir_ + "/" + name; }

  std::vector<std::string> DirectoryEntries() const {
    std::vector<std::string> names;
    for (const auto& entry : std::filesystem::directory_iterator(dir_)) {
      names.push_back(entry.path().filename().string());
    }
    return names;
  }

  std::string dir_;
};

TEST_F(CheckpointTest, RoundTripIsBitExact) {
  const ShardSnapshot snapshot = RichSnapshot();
  const std::string path = Path("shard.ckpt");
  absl::StatusOr<uint64_t> bytes = WriteCheckpoint(path, snapshot);
  ASSERT_TRUE(bytes.ok()) << bytes.status();
  EXPECT_EQ(*bytes, std::filesystem::file_size(path));

  absl::StatusOr<ShardSnapshot> read = ReadCheckpoint(path);
  ASSERT_TRUE(read.ok()) << read.status();
  ExpectBitIdentical(snapshot, *read);
  // Guards the comparison itself: -0.0f must not have become +0.0f.
  EXPECT_EQ(Bits(read->tensors[0].chunks[0].weights[0]), 0x80000000u);
  EXPECT_EQ(Bits(read->tensors[0].chunks[0].weights[1]), 0x00000001u);
}

TEST_F(CheckpointTest, EveryInitializerKindRoundTrips) {
  const ShardSnapshot snapshot = RichSnapshot();
  ASSERT_TRUE(WriteCheckpoint(Path("c"), snapshot).ok());
  absl::StatusOr<ShardSnapshot> read = ReadCheckpoint(Path("c"));
  ASSERT_TRUE(read.ok()) << read.status();
  std::vector<Initializer::Kind> kinds;
  for (const TensorState& t : read->tensors) kinds.push_back(t.spec.init.kind);
  EXPECT_THAT(kinds, UnorderedElementsAre(Initializer::Kind::kZeros, Initializer::Kind::kConstant,
                                          Initializer::Kind::kUniform, Initializer::Kind::kNormal,
                                          Initializer::Kind::kValues));
  for (size_t i = 0; i < snapshot.tensors.size(); ++i) {
    EXPECT_EQ(snapshot.tensors[i].spec, read->tensors[i].spec) << snapshot.tensors[i].spec.name;
  }
}

TEST_F(CheckpointTest, EmptySnapshotRoundTrips) {
  ShardSnapshot snapshot;
  snapshot.shard_index = 2;
  snapshot.shard_count = 3;
  snapshot.version = 7;
  absl::StatusOr<uint64_t> bytes = WriteCheckpoint(Path("empty"), snapshot);
  ASSERT_TRUE(bytes.ok()) << bytes.status();
  // magic 8 + format 4 + shard 4+4 + version 8 + tensor count 8 + crc 4.
  EXPECT_EQ(*bytes, 40u);
  absl::StatusOr<ShardSnapshot> read = ReadCheckpoint(Path("empty"));
  ASSERT_TRUE(read.ok()) << read.status();
  ExpectBitIdentical(snapshot, *read);
}

TEST_F(CheckpointTest, ChunksLargerThanTheIoBufferRoundTrip) {
  // 300k floats (1.2 MB) exceed the 1 MiB buffers on both sides, so the
  // unbuffered paths run; odd sizes check the buffer boundaries.
  for (int64_t n : {int64_t{1}, int64_t{262143}, int64_t{300001}}) {
    SCOPED_TRACE(n);
    ShardSnapshot snapshot;
    TensorState t;
    t.spec = Spec("big", {n}, 300001, Initializer::Kind::kZeros);
    ChunkState chunk;
    for (int64_t i = 0; i < n; ++i) chunk.weights.push_back(static_cast<float>(i) * 0.5f);
    chunk.momentum = chunk.weights;
    chunk.momentum.back() = -0.0f;
    t.chunks.push_back(chunk);
    snapshot.tensors.push_back(t);
    ASSERT_TRUE(WriteCheckpoint(Path("big"), snapshot).ok());
    absl::StatusOr<ShardSnapshot> read = ReadCheckpoint(Path("big"));
    ASSERT_TRUE(read.ok()) << read.status();
    ExpectBitIdentical(snapshot, *read);
  }
}

TEST_F(CheckpointTest, WriterMatchesDocumentedLayout) {
  ShardSnapshot snapshot;
  snapshot.shard_index = 0;
  snapshot.shard_count = 1;
  snapshot.version = 5;
  TensorState t;
  t.spec = Spec("t", {3}, 2, Initializer::Kind::kConstant, 1.5f, 0, 9);
  t.chunks.push_back({1, {-0.0f}, {}, {2.0f}, {0.25f}});
  snapshot.tensors.push_back(t);
  ASSERT_TRUE(WriteCheckpoint(Path("c"), snapshot).ok());

  LayoutEncoder e;
  e.Header(2, 1);
  SmallSpec(e).U64(1);                   // one owned chunk
  e.U64(1).U64(1).U64(0).U64(1).U64(1);  // index 1; 1 weight, 0 mean_square, 1 momentum, 1 gap
  e.F32(-0.0f).F32(2.0f).F32(0.25f);
  EXPECT_EQ(ReadFileBytes(Path("c")), e.Finish());
}

TEST_F(CheckpointTest, FormatVersion1IsStillRead) {
  // Written before gap-aware damping: chunk records without the gap scale.
  LayoutEncoder e;
  e.Header(1, 1);
  SmallSpec(e).U64(1);
  e.U64(1).U64(1).U64(1).U64(0);  // index 1; 1 weight, 1 mean_square, 0 momentum
  e.F32(3.0f).F32(0.5f);
  WriteFileBytes(Path("c"), e.Finish());
  absl::StatusOr<ShardSnapshot> read = ReadCheckpoint(Path("c"));
  ASSERT_TRUE(read.ok()) << read.status();
  EXPECT_EQ(read->version, 5u);
  ASSERT_EQ(read->tensors.size(), 1u);
  ASSERT_EQ(read->tensors[0].chunks.size(), 1u);
  const ChunkState& chunk = read->tensors[0].chunks[0];
  EXPECT_EQ(chunk.index, 1u);
  EXPECT_EQ(chunk.weights, std::vector<float>{3.0f});
  EXPECT_EQ(chunk.mean_square, std::vector<float>{0.5f});
  EXPECT_TRUE(chunk.momentum.empty());
  EXPECT_TRUE(chunk.gap_scale.empty());
}

TEST_F(CheckpointTest, TruncationAtEveryOffsetIsDataLoss) {
  ASSERT_TRUE(WriteCheckpoint(Path("good"), RichSnapshot()).ok());
  const std::string bytes = ReadFileBytes(Path("good"));
  ASSERT_GT(bytes.size(), 100u);
  const std::string path = Path("truncated");
  for (size_t n = 0; n < bytes.size(); ++n) {
    WriteFileBytes(path, bytes.substr(0, n));
    absl::StatusOr<ShardSnapshot> read = ReadCheckpoint(path);
    ASSERT_EQ(read.status().code(), absl::StatusCode::kDataLoss) << "length " << n;
    ASSERT_THAT(read.status().message(), HasSubstr(path)) << "length " << n;
  }
}

TEST_F(CheckpointTest, EveryFlippedByteIsDataLoss) {
  ASSERT_TRUE(WriteCheckpoint(Path("good"), RichSnapshot()).ok());
  const std::string bytes = ReadFileBytes(Path("good"));
  const std::string path = Path("flipped");
  for (size_t i = 0; i < bytes.size(); ++i) {
    std::string corrupt = bytes;
    corrupt[i] = static_cast<char>(corrupt[i] ^ 0xff);
    WriteFileBytes(path, corrupt);
    absl::StatusOr<ShardSnapshot> read = ReadCheckpoint(path);
    ASSERT_EQ(read.status().code(), absl::StatusCode::kDataLoss) << "byte " << i;
    ASSERT_THAT(read.status().message(), HasSubstr(path)) << "byte " << i;
  }
}

TEST_F(CheckpointTest, SingleBitFlipInDataIsChecksumMismatch) {
  ASSERT_TRUE(WriteCheckpoint(Path("c"), RichSnapshot()).ok());
  std::string bytes = ReadFileBytes(Path("c"));
  // The last byte before the trailer belongs to the last momentum float.
  bytes[bytes.size() - 5] ^= 0x01;
  WriteFileBytes(Path("c"), bytes);
  absl::StatusOr<ShardSnapshot> read = ReadCheckpoint(Path("c"));
  EXPECT_EQ(read.status().code(), absl::StatusCode::kDataLoss);
  EXPECT_THAT(read.status().message(), HasSubstr("checksum"));
}

TEST_F(CheckpointTest, TrailingBytesAreDataLoss) {
  ASSERT_TRUE(WriteCheckpoint(Path("c"), RichSnapshot()).ok());
  WriteFileBytes(Path("c"), ReadFileBytes(Path("c")) + "x");
  EXPECT_EQ(ReadCheckpoint(Path("c")).status().code(), absl::StatusCode::kDataLoss);
}

TEST_F(CheckpointTest, BadMagicIsDataLoss) {
  LayoutEncoder e;
  e.Raw("DCASGDCX").U32(1).U32(0).U32(1).U64(5).U64(0);
  WriteFileBytes(Path("c"), e.Finish());
  absl::StatusOr<ShardSnapshot> read = ReadCheckpoint(Path("c"));
  EXPECT_EQ(read.status().code(), absl::StatusCode::kDataLoss);
  EXPECT_THAT(read.status().message(), HasSubstr("magic"));
  EXPECT_THAT(read.status().message(), HasSubstr(Path("c")));
}

TEST_F(CheckpointTest, UnsupportedFormatVersionIsDataLoss) {
  LayoutEncoder e;
  e.Header(3, 0);  // a valid checksum: only the version is wrong
  WriteFileBytes(Path("c"), e.Finish());
  absl::StatusOr<ShardSnapshot> read = ReadCheckpoint(Path("c"));
  EXPECT_EQ(read.status().code(), absl::StatusCode::kDataLoss);
  EXPECT_THAT(read.status().message(), HasSubstr("format version 3"));
  LayoutEncoder zero;
  zero.Header(0, 0);
  WriteFileBytes(Path("c"), zero.Finish());
  EXPECT_EQ(ReadCheckpoint(Path("c")).status().code(), absl::StatusCode::kDataLoss);
}

TEST_F(CheckpointTest, AbsurdLengthsAreDataLossNotAllocations) {
  // Each file has a valid checksum, so only the length checks can reject it;
  // allocating any of these lengths would abort the test with bad_alloc.
  std::vector<std::string> files;
  {
    LayoutEncoder e;
    e.Header(1, 1).U32(0xffffffffu).Raw("t");  // name length
    files.push_back(e.Finish());
  }
  {
    LayoutEncoder e;
    e.Header(1, 1).U32(1).Raw("t").U32(0xffffffffu);  // rank
    files.push_back(e.Finish());
  }
  {
    LayoutEncoder e;  // initial value count
    e.Header(1, 1).U32(1).Raw("t").U32(1).U64(3).U32(2).U32(4).F32(0).F32(0).U64(0).U64(uint64_t{1}
                                                                                        << 62);
    files.push_back(e.Finish());
  }
  {
    LayoutEncoder e;  // tensor count
    e.Header(1, std::numeric_limits<uint64_t>::max());
    files.push_back(e.Finish());
  }
  {
    LayoutEncoder e;  // weights length of a chunk of a 2^40-element tensor
    e.Header(1, 1).U32(1).Raw("t").U32(1).U64(uint64_t{1} << 40).U32(0xffffffffu).U32(0);
    e.F32(0).F32(0).U64(0).U64(0).U64(1);
    e.U64(0).U64(0xffffffffu).U64(0).U64(0);
    files.push_back(e.Finish());
  }
  for (size_t i = 0; i < files.size(); ++i) {
    WriteFileBytes(Path("c"), files[i]);
    absl::StatusOr<ShardSnapshot> read = ReadCheckpoint(Path("c"));
    EXPECT_EQ(read.status().code(), absl::StatusCode::kDataLoss) << "file " << i;
  }
}

TEST_F(CheckpointTest, InconsistentContentIsDataLoss) {
  struct Case {
    const char* what;
    std::string bytes;
  };
  std::vector<Case> cases;
  {
    LayoutEncoder e;
    e.Raw("DCASGDCK").U32(1).U32(3).U32(3).U64(5).U64(0);  // shard 3 of 3
    cases.push_back({"shard index", e.Finish()});
  }
  {
    LayoutEncoder e;
    e.Header(1, 1);
    SmallSpec(e).U64(1).U64(2).U64(1).U64(0).U64(0).F32(1);  // chunk 2 of 2 chunks
    cases.push_back({"chunk out of range", e.Finish()});
  }
  {
    LayoutEncoder e;
    e.Header(1, 1);
    SmallSpec(e).U64(1).U64(0).U64(1).U64(0).U64(0).F32(1);  // chunk 0 has 2 elements
    cases.push_back({"weights length", e.Finish()});
  }
  {
    LayoutEncoder e;
    e.Header(1, 1);
    SmallSpec(e).U64(1).U64(1).U64(1).U64(0).U64(2).F32(1).F32(1).F32(1);
    cases.push_back({"momentum length", e.Finish()});
  }
  {
    LayoutEncoder e;
    e.Header(2, 1);
    SmallSpec(e).U64(1).U64(1).U64(1).U64(0).U64(0).U64(3).F32(1).F32(1).F32(1).F32(1);
    cases.push_back({"gap_scale length", e.Finish()});
  }
  {
    LayoutEncoder e;
    e.Header(1, 1);
    SmallSpec(e).U64(2);
    e.U64(1).U64(1).U64(0).U64(0).F32(1);
    e.U64(1).U64(1).U64(0).U64(0).F32(1);  // chunk 1 twice
    cases.push_back({"chunk order", e.Finish()});
  }
  {
    LayoutEncoder e;
    e.Header(1, 2);
    SmallSpec(e).U64(0);
    SmallSpec(e).U64(0);
    cases.push_back({"duplicate tensor", e.Finish()});
  }
  {
    LayoutEncoder e;
    e.Header(1, 1).U32(1).Raw("t").U32(1).U64(3).U32(2).U32(9);  // initializer kind 9
    e.F32(0).F32(0).U64(0).U64(0).U64(0);
    cases.push_back({"initializer kind", e.Finish()});
  }
  {
    LayoutEncoder e;
    e.Header(1, 1).U32(1).Raw("t").U32(1).U64(3).U32(0).U32(0);  // chunk_elements 0
    e.F32(0).F32(0).U64(0).U64(0).U64(0);
    cases.push_back({"chunk elements", e.Finish()});
  }
  for (const Case& c : cases) {
    WriteFileBytes(Path("c"), c.bytes);
    absl::StatusOr<ShardSnapshot> read = ReadCheckpoint(Path("c"));
    EXPECT_EQ(read.status().code(), absl::StatusCode::kDataLoss) << c.what;
    EXPECT_THAT(read.status().message(), HasSubstr(Path("c"))) << c.what;
  }
}

TEST_F(CheckpointTest, MissingFileIsNotFound) {
  absl::StatusOr<ShardSnapshot> read = ReadCheckpoint(Path("absent"));
  EXPECT_EQ(read.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(read.status().message(), HasSubstr(Path("absent")));
}

TEST_F(CheckpointTest, DirectoryIsNotACheckpoint) {
  absl::StatusOr<ShardSnapshot> read = ReadCheckpoint(dir_);
  EXPECT_FALSE(read.ok());
}

TEST_F(CheckpointTest, WriteToMissingDirectoryFailsAndLeavesNoTempFile) {
  const std::string path = Path("no/such/dir/shard.ckpt");
  absl::StatusOr<uint64_t> bytes = WriteCheckpoint(path, RichSnapshot());
  ASSERT_FALSE(bytes.ok());
  EXPECT_EQ(bytes.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(bytes.status().message(), HasSubstr(path));
  EXPECT_THAT(bytes.status().message(), HasSubstr(std::strerror(ENOENT)));
  EXPECT_THAT(DirectoryEntries(), IsEmpty());
}

TEST_F(CheckpointTest, InvalidSnapshotIsRejectedBeforeWriting) {
  std::vector<ShardSnapshot> invalid(4, RichSnapshot());
  invalid[0].tensors[0].chunks[0].weights.pop_back();
  invalid[1].tensors[0].chunks[1].mean_square.push_back(1);
  invalid[2].shard_index = 3;
  invalid[3].tensors[1].spec.chunk_elements = 0;
  for (size_t i = 0; i < invalid.size(); ++i) {
    absl::StatusOr<uint64_t> bytes = WriteCheckpoint(Path("c"), invalid[i]);
    EXPECT_EQ(bytes.status().code(), absl::StatusCode::kInvalidArgument) << i;
  }
  EXPECT_THAT(DirectoryEntries(), IsEmpty());
}

TEST_F(CheckpointTest, OverwriteReplacesContentAndLeavesNoTempFile) {
  ShardSnapshot old_snapshot = RichSnapshot();
  ASSERT_TRUE(WriteCheckpoint(Path("shard.ckpt"), old_snapshot).ok());
  ShardSnapshot new_snapshot = RichSnapshot();
  new_snapshot.version += 1;
  new_snapshot.tensors[1].chunks[0].weights[0] = 8.0f;
  ASSERT_TRUE(WriteCheckpoint(Path("shard.ckpt"), new_snapshot).ok());

  EXPECT_THAT(DirectoryEntries(), UnorderedElementsAre("shard.ckpt"));
  absl::StatusOr<ShardSnapshot> read = ReadCheckpoint(Path("shard.ckpt"));
  ASSERT_TRUE(read.ok()) << read.status();
  ExpectBitIdentical(new_snapshot, *read);
}

// Makes writes beyond `bytes` fail with EFBIG, even as root, until destroyed.
class FileSizeLimit {
 public:
  explicit FileSizeLimit(rlim_t bytes) {
    old_handler_ = signal(SIGXFSZ, SIG_IGN);
    getrlimit(RLIMIT_FSIZE, &old_);
    rlimit limit = old_;
    limit.rlim_cur = bytes;
    ok_ = setrlimit(RLIMIT_FSIZE, &limit) == 0;
  }
  ~FileSizeLimit() {
    setrlimit(RLIMIT_FSIZE, &old_);
    signal(SIGXFSZ, old_handler_);
  }
  bool ok() const { return ok_; }

 private:
  rlimit old_;
  sighandler_t old_handler_;
  bool ok_ = false;
};

TEST_F(CheckpointTest, FailedOverwriteKeepsOldCheckpoint) {
  const std::string path = Path("shard.ckpt");
  const ShardSnapshot old_snapshot = RichSnapshot();
  ASSERT_TRUE(WriteCheckpoint(path, old_snapshot).ok());
  const std::string old_bytes = ReadFileBytes(path);

  ShardSnapshot big;  // 4 MB: fails part-way through a buffered write
  TensorState t;
  t.spec = Spec("big", {1 << 20}, 1 << 20, Initializer::Kind::kZeros);
  t.chunks.push_back({0, std::vector<float>(1 << 20, 1.0f), {}, {}, {}});
  big.tensors.push_back(t);
  absl::StatusOr<uint64_t> bytes;
  {
    FileSizeLimit limit(64 << 10);
    ASSERT_TRUE(limit.ok());
    bytes = WriteCheckpoint(path, big);
  }
  ASSERT_FALSE(bytes.ok());
  EXPECT_THAT(bytes.status().message(), HasSubstr(path));
  EXPECT_THAT(bytes.status().message(), HasSubstr(std::strerror(EFBIG)));

  EXPECT_THAT(DirectoryEntries(), UnorderedElementsAre("shard.ckpt"));
  EXPECT_EQ(ReadFileBytes(path), old_bytes);
  absl::StatusOr<ShardSnapshot> read = ReadCheckpoint(path);
  ASSERT_TRUE(read.ok()) << read.status();
  ExpectBitIdentical(old_snapshot, *read);
}

TEST_F(CheckpointTest, ReadOnlyDirectoryKeepsOldCheckpoint) {
  if (geteuid() == 0) GTEST_SKIP() << "root ignores directory permissions";
  const std::string path = Path("shard.ckpt");
  const ShardSnapshot old_snapshot = RichSnapshot();
  ASSERT_TRUE(WriteCheckpoint(path, old_snapshot).ok());
  ASSERT_EQ(chmod(dir_.c_str(), 0555), 0);
  ShardSnapshot new_snapshot = old_snapshot;
  new_snapshot.version += 1;
  absl::StatusOr<uint64_t> bytes = WriteCheckpoint(path, new_snapshot);
  ASSERT_EQ(chmod(dir_.c_str(), 0755), 0);
  EXPECT_EQ(bytes.status().code(), absl::StatusCode::kPermissionDenied);
  EXPECT_THAT(bytes.status().message(), HasSubstr(path));
  EXPECT_THAT(DirectoryEntries(), UnorderedElementsAre("shard.ckpt"));
  absl::StatusOr<ShardSnapshot> read = ReadCheckpoint(path);
  ASSERT_TRUE(read.ok()) << read.status();
  ExpectBitIdentical(old_snapshot, *read);
}

}  // namespace
}  // namespace dcasgd
