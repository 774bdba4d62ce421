#include "core/checkpoint.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <limits>
#include <set>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "base/endian.h"
#include "base/file.h"
#include "base/status_macros.h"

// The byte layout is documented in docs/checkpoint-format.md; keep the two in
// step.

namespace dcasgd {
namespace {

constexpr char kMagic[8] = {'D', 'C', 'A', 'S', 'G', 'D', 'C', 'K'};
constexpr uint32_t kFormatVersion = 2;
// Version 1 had no gap scale in its chunk records; it is still read.
constexpr uint32_t kOldestFormatVersion = 1;
constexpr uint64_t kTrailerBytes = 4;  // CRC-32
// Buffers bound memory use whatever the shard size; 1 MiB amortises syscalls.
constexpr size_t kBufferBytes = size_t{1} << 20;

void EncodeU32(uint32_t v, char* out) {
  for (int i = 0; i < 4; ++i) out[i] = static_cast<char>((v >> (8 * i)) & 0xff);
}
void EncodeU64(uint64_t v, char* out) {
  for (int i = 0; i < 8; ++i) out[i] = static_cast<char>((v >> (8 * i)) & 0xff);
}
uint32_t DecodeU32(const char* in) {
  uint32_t v = 0;
  for (int i = 0; i < 4; ++i) v |= uint32_t{static_cast<unsigned char>(in[i])} << (8 * i);
  return v;
}
uint64_t DecodeU64(const char* in) {
  uint64_t v = 0;
  for (int i = 0; i < 8; ++i) v |= uint64_t{static_cast<unsigned char>(in[i])} << (8 * i);
  return v;
}
uint32_t FloatBits(float f) {
  uint32_t bits = 0;
  std::memcpy(&bits, &f, sizeof(bits));
  return bits;
}
float FloatFromBits(uint32_t bits) {
  float f;
  std::memcpy(&f, &bits, sizeof(f));
  return f;
}

uint32_t KindCode(Initializer::Kind kind) {
  switch (kind) {
    case Initializer::Kind::kZeros:
      return 0;
    case Initializer::Kind::kConstant:
      return 1;
    case Initializer::Kind::kUniform:
      return 2;
    case Initializer::Kind::kNormal:
      return 3;
    case Initializer::Kind::kValues:
      return 4;
  }
  return 0xffffffff;
}

bool KindFromCode(uint32_t code, Initializer::Kind* kind) {
  switch (code) {
    case 0:
      *kind = Initializer::Kind::kZeros;
      return true;
    case 1:
      *kind = Initializer::Kind::kConstant;
      return true;
    case 2:
      *kind = Initializer::Kind::kUniform;
      return true;
    case 3:
      *kind = Initializer::Kind::kNormal;
      return true;
    case 4:
      *kind = Initializer::Kind::kValues;
      return true;
    default:
      return false;
  }
}

absl::Status FileError(int err, absl::string_view path, absl::string_view what) {
  return absl::ErrnoToStatus(err, absl::StrCat("checkpoint ", path, ": ", what));
}

// The consistency rules shared by the writer (INVALID_ARGUMENT: the caller's
// snapshot is wrong) and the reader (DATA_LOSS: the file is wrong).
absl::Status CheckShard(uint32_t shard_index, uint32_t shard_count) {
  if (shard_count == 0 || shard_index >= shard_count) {
    return absl::InvalidArgumentError(
        absl::StrCat("shard ", shard_index, " of ", shard_count, " is not a valid shard"));
  }
  return absl::OkStatus();
}

absl::Status CheckSpec(const TensorSpec& spec, std::set<std::string>* seen_names) {
  if (spec.name.size() > std::numeric_limits<uint32_t>::max()) {
    return absl::InvalidArgumentError("tensor name longer than 4 GiB");
  }
  if (spec.chunk_elements == 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("tensor '", spec.name, "': chunk_elements is not resolved (0)"));
  }
  RETURN_IF_ERROR(ValidateTensorSpec(spec));
  if (!seen_names->insert(spec.name).second) {
    return absl::InvalidArgumentError(absl::StrCat("tensor '", spec.name, "' appears twice"));
  }
  return absl::OkStatus();
}

// `previous_index` is the index of the chunk before this one in the tensor,
// or -1 for the first.
absl::Status CheckChunk(const TensorSpec& spec, int64_t previous_index, uint64_t index,
                        uint64_t weights, uint64_t mean_square, uint64_t momentum,
                        uint64_t gap_scale) {
  if (index >= spec.num_chunks()) {
    return absl::InvalidArgumentError(absl::StrCat("tensor '", spec.name, "': chunk ", index,
                                                   " is out of range (", spec.num_chunks(),
                                                   " chunks)"));
  }
  if (previous_index >= 0 && index <= static_cast<uint64_t>(previous_index)) {
    return absl::InvalidArgumentError(absl::StrCat("tensor '", spec.name, "': chunk ", index,
                                                   " follows chunk ", previous_index,
                                                   "; chunks must be in increasing order"));
  }
  const uint64_t length = spec.chunk_length(index);
  if (weights != length) {
    return absl::InvalidArgumentError(absl::StrCat("tensor '", spec.name, "' chunk ", index, ": ",
                                                   weights, " weights, expected ", length));
  }
  if ((mean_square != 0 && mean_square != length) || (momentum != 0 && momentum != length) ||
      (gap_scale != 0 && gap_scale != length)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "tensor '", spec.name, "' chunk ", index, ": optimizer vectors have ", mean_square, ", ",
        momentum, " and ", gap_scale, " elements, expected 0 or ", length));
  }
  return absl::OkStatus();
}

absl::Status ValidateSnapshot(const ShardSnapshot& snapshot) {
  RETURN_IF_ERROR(CheckShard(snapshot.shard_index, snapshot.shard_count));
  std::set<std::string> names;
  for (const TensorState& tensor : snapshot.tensors) {
    RETURN_IF_ERROR(CheckSpec(tensor.spec, &names));
    int64_t previous = -1;
    for (const ChunkState& chunk : tensor.chunks) {
      RETURN_IF_ERROR(CheckChunk(tensor.spec, previous, chunk.index, chunk.weights.size(),
                                 chunk.mean_square.size(), chunk.momentum.size(),
                                 chunk.gap_scale.size()));
      previous = static_cast<int64_t>(chunk.index);
    }
  }
  return absl::OkStatus();
}

// Buffered appends to a checkpoint being written, with a running CRC-32 of
// everything appended. Does not own the file.
class ChecksummedFileWriter {
 public:
  explicit ChecksummedFileWriter(AtomicFileWriter* file) : file_(file) {
    buffer_.reserve(kBufferBytes);
  }

  absl::Status Append(const char* data, size_t n) {
    // crc32_z() with a null buffer (an empty vector's data()) returns the
    // initial CRC, so empty appends must skip it.
    if (n == 0) return absl::OkStatus();
    crc_ = crc32_z(crc_, reinterpret_cast<const Bytef*>(data), n);
    bytes_ += n;
    return AppendUnchecksummed(data, n);
  }
  absl::Status AppendU32(uint32_t v) {
    char b[4];
    EncodeU32(v, b);
    return Append(b, sizeof(b));
  }
  absl::Status AppendU64(uint64_t v) {
    char b[8];
    EncodeU64(v, b);
    return Append(b, sizeof(b));
  }
  absl::Status AppendFloat(float v) { return AppendU32(FloatBits(v)); }
  // Float arrays are little-endian in the file, as in memory (base/endian.h).
  absl::Status AppendFloats(const std::vector<float>& values) {
    return Append(reinterpret_cast<const char*>(values.data()), values.size() * sizeof(float));
  }

  // Appends the CRC of everything so far and flushes.
  absl::Status Finish() {
    char b[4];
    EncodeU32(static_cast<uint32_t>(crc_), b);
    bytes_ += sizeof(b);
    RETURN_IF_ERROR(AppendUnchecksummed(b, sizeof(b)));
    return Flush();
  }

  uint64_t bytes() const { return bytes_; }

 private:
  absl::Status AppendUnchecksummed(const char* data, size_t n) {
    if (buffer_.size() + n > kBufferBytes) RETURN_IF_ERROR(Flush());
    // Large arrays skip the copy.
    if (n >= kBufferBytes) return file_->Write(absl::string_view(data, n));
    buffer_.append(data, n);
    return absl::OkStatus();
  }

  absl::Status Flush() {
    RETURN_IF_ERROR(file_->Write(buffer_));
    buffer_.clear();
    return absl::OkStatus();
  }

  AtomicFileWriter* const file_;
  std::string buffer_;
  uLong crc_ = crc32_z(0L, Z_NULL, 0);
  uint64_t bytes_ = 0;
};

absl::Status WriteSnapshot(const ShardSnapshot& snapshot, ChecksummedFileWriter* out) {
  RETURN_IF_ERROR(out->Append(kMagic, sizeof(kMagic)));
  RETURN_IF_ERROR(out->AppendU32(kFormatVersion));
  RETURN_IF_ERROR(out->AppendU32(snapshot.shard_index));
  RETURN_IF_ERROR(out->AppendU32(snapshot.shard_count));
  RETURN_IF_ERROR(out->AppendU64(snapshot.version));
  RETURN_IF_ERROR(out->AppendU64(snapshot.tensors.size()));
  for (const TensorState& tensor : snapshot.tensors) {
    const TensorSpec& spec = tensor.spec;
    RETURN_IF_ERROR(out->AppendU32(static_cast<uint32_t>(spec.name.size())));
    RETURN_IF_ERROR(out->Append(spec.name.data(), spec.name.size()));
    RETURN_IF_ERROR(out->AppendU32(static_cast<uint32_t>(spec.shape.size())));
    for (int64_t d : spec.shape) RETURN_IF_ERROR(out->AppendU64(static_cast<uint64_t>(d)));
    RETURN_IF_ERROR(out->AppendU32(spec.chunk_elements));
    RETURN_IF_ERROR(out->AppendU32(KindCode(spec.init.kind)));
    RETURN_IF_ERROR(out->AppendFloat(spec.init.a));
    RETURN_IF_ERROR(out->AppendFloat(spec.init.b));
    RETURN_IF_ERROR(out->AppendU64(spec.init.seed));
    RETURN_IF_ERROR(out->AppendU64(spec.init.values.size()));
    RETURN_IF_ERROR(out->AppendFloats(spec.init.values));
    RETURN_IF_ERROR(out->AppendU64(tensor.chunks.size()));
    for (const ChunkState& chunk : tensor.chunks) {
      RETURN_IF_ERROR(out->AppendU64(chunk.index));
      RETURN_IF_ERROR(out->AppendU64(chunk.weights.size()));
      RETURN_IF_ERROR(out->AppendU64(chunk.mean_square.size()));
      RETURN_IF_ERROR(out->AppendU64(chunk.momentum.size()));
      RETURN_IF_ERROR(out->AppendU64(chunk.gap_scale.size()));
      RETURN_IF_ERROR(out->AppendFloats(chunk.weights));
      RETURN_IF_ERROR(out->AppendFloats(chunk.mean_square));
      RETURN_IF_ERROR(out->AppendFloats(chunk.momentum));
      RETURN_IF_ERROR(out->AppendFloats(chunk.gap_scale));
    }
  }
  return out->Finish();
}

// Buffered reads of the body of an open checkpoint with a running CRC-32.
// Every read is checked against the bytes left before the trailer, so a
// corrupt length can never make the caller allocate more than the file holds.
// Does not own the descriptor.
class ChecksummedFileReader {
 public:
  ChecksummedFileReader(int fd, std::string path, uint64_t file_bytes)
      : fd_(fd), path_(std::move(path)), unread_(file_bytes), buffer_(kBufferBytes) {}

  // Bytes of the body not yet read.
  uint64_t body_left() const { return unread_ < kTrailerBytes ? 0 : unread_ - kTrailerBytes; }

  absl::Status Read(char* out, size_t n, absl::string_view what) {
    if (n > body_left()) {
      return DataLoss(absl::StrCat("truncated: ", what, " needs ", n, " bytes but only ",
                                   body_left(), " remain before the checksum"));
    }
    if (n == 0) return absl::OkStatus();  // see ChecksummedFileWriter::Append
    RETURN_IF_ERROR(ReadRaw(out, n));
    crc_ = crc32_z(crc_, reinterpret_cast<const Bytef*>(out), n);
    return absl::OkStatus();
  }
  absl::Status ReadU32(uint32_t* v, absl::string_view what) {
    char b[4];
    RETURN_IF_ERROR(Read(b, sizeof(b), what));
    *v = DecodeU32(b);
    return absl::OkStatus();
  }
  absl::Status ReadU64(uint64_t* v, absl::string_view what) {
    char b[8];
    RETURN_IF_ERROR(Read(b, sizeof(b), what));
    *v = DecodeU64(b);
    return absl::OkStatus();
  }
  absl::Status ReadFloat(float* v, absl::string_view what) {
    uint32_t bits = 0;
    RETURN_IF_ERROR(ReadU32(&bits, what));
    *v = FloatFromBits(bits);
    return absl::OkStatus();
  }
  absl::Status ReadFloats(uint64_t count, std::vector<float>* values, absl::string_view what) {
    if (count > body_left() / sizeof(float)) {
      return DataLoss(absl::StrCat("truncated or corrupt: ", what, " claims ", count,
                                   " floats but only ", body_left(),
                                   " bytes remain before the checksum"));
    }
    values->resize(count);
    return Read(reinterpret_cast<char*>(values->data()), count * sizeof(float), what);
  }

  // Reads the trailer and compares it with the CRC of the body read so far.
  absl::Status VerifyTrailer() {
    if (unread_ != kTrailerBytes) {
      return DataLoss(
          absl::StrCat(unread_ - kTrailerBytes, " unexpected bytes after the last tensor"));
    }
    char b[4];
    RETURN_IF_ERROR(ReadRaw(b, sizeof(b)));
    const uint32_t stored = DecodeU32(b);
    const uint32_t computed = static_cast<uint32_t>(crc_);
    if (stored != computed) {
      return DataLoss(absl::StrCat("checksum mismatch: stored ", stored, ", computed ", computed));
    }
    return absl::OkStatus();
  }

  absl::Status DataLoss(absl::string_view what) const {
    return absl::DataLossError(absl::StrCat("checkpoint ", path_, ": ", what));
  }

 private:
  absl::Status ReadRaw(char* out, size_t n) {
    unread_ -= n;
    while (n > 0) {
      if (begin_ == end_) {
        // Large reads go straight to the destination.
        if (n >= buffer_.size()) {
          size_t got = 0;
          RETURN_IF_ERROR(ReadOnce(out, n, &got));
          out += got;
          n -= got;
          continue;
        }
        size_t got = 0;
        RETURN_IF_ERROR(ReadOnce(buffer_.data(), buffer_.size(), &got));
        begin_ = 0;
        end_ = got;
      }
      const size_t take = std::min(n, end_ - begin_);
      std::memcpy(out, buffer_.data() + begin_, take);
      begin_ += take;
      out += take;
      n -= take;
    }
    return absl::OkStatus();
  }

  absl::Status ReadOnce(char* dst, size_t n, size_t* got) {
    ssize_t r;
    do {
      r = read(fd_, dst, n);
    } while (r < 0 && errno == EINTR);
    if (r < 0) return FileError(errno, path_, "read");
    // The size came from fstat; a file that shrinks under us is truncated.
    if (r == 0) return DataLoss("truncated while reading (file shrank)");
    *got = static_cast<size_t>(r);
    return absl::OkStatus();
  }

  const int fd_;
  const std::string path_;
  uint64_t unread_;  // bytes of the file not yet consumed, trailer included
  std::vector<char> buffer_;
  size_t begin_ = 0;
  size_t end_ = 0;
  uLong crc_ = crc32_z(0L, Z_NULL, 0);
};

// Reads one tensor (its spec, then its chunks) of a checkpoint; `names`
// are the tensors read so far (names are unique). `format_version` is the
// file's (version 1 chunk records have no gap scale).
absl::Status ReadTensor(ChecksummedFileReader* in, uint32_t format_version,
                        std::set<std::string>* names, TensorState* tensor) {
  auto inconsistent = [in](const absl::Status& s) {
    return in->DataLoss(absl::StrCat("inconsistent: ", s.message()));
  };
  TensorSpec& spec = tensor->spec;
  uint32_t name_bytes = 0;
  RETURN_IF_ERROR(in->ReadU32(&name_bytes, "tensor name length"));
  if (name_bytes > in->body_left()) {
    return in->DataLoss(absl::StrCat("truncated or corrupt: tensor name of ", name_bytes,
                                     " bytes but only ", in->body_left(), " remain"));
  }
  spec.name.resize(name_bytes);
  RETURN_IF_ERROR(in->Read(spec.name.data(), name_bytes, "tensor name"));
  uint32_t rank = 0;
  RETURN_IF_ERROR(in->ReadU32(&rank, "tensor rank"));
  if (rank > in->body_left() / sizeof(uint64_t)) {
    return in->DataLoss(absl::StrCat("truncated or corrupt: tensor '", spec.name, "' of rank ",
                                     rank, " but only ", in->body_left(), " bytes remain"));
  }
  spec.shape.resize(rank);
  for (int64_t& d : spec.shape) {
    uint64_t dim = 0;
    RETURN_IF_ERROR(in->ReadU64(&dim, "dimension"));
    d = static_cast<int64_t>(dim);
  }
  RETURN_IF_ERROR(in->ReadU32(&spec.chunk_elements, "chunk elements"));
  uint32_t kind_code = 0;
  RETURN_IF_ERROR(in->ReadU32(&kind_code, "initializer kind"));
  if (!KindFromCode(kind_code, &spec.init.kind)) {
    return in->DataLoss(
        absl::StrCat("tensor '", spec.name, "': unknown initializer kind ", kind_code));
  }
  RETURN_IF_ERROR(in->ReadFloat(&spec.init.a, "initializer parameter a"));
  RETURN_IF_ERROR(in->ReadFloat(&spec.init.b, "initializer parameter b"));
  RETURN_IF_ERROR(in->ReadU64(&spec.init.seed, "initializer seed"));
  uint64_t value_count = 0;
  RETURN_IF_ERROR(in->ReadU64(&value_count, "initial value count"));
  RETURN_IF_ERROR(in->ReadFloats(value_count, &spec.init.values, "initial values"));
  if (absl::Status s = CheckSpec(spec, names); !s.ok()) return inconsistent(s);

  uint64_t chunk_count = 0;
  RETURN_IF_ERROR(in->ReadU64(&chunk_count, "chunk count"));
  if (chunk_count > spec.num_chunks()) {
    return in->DataLoss(absl::StrCat("inconsistent: tensor '", spec.name, "' lists ", chunk_count,
                                     " chunks but has only ", spec.num_chunks()));
  }
  int64_t previous = -1;
  for (uint64_t c = 0; c < chunk_count; ++c) {
    ChunkState chunk;
    uint64_t weights = 0, mean_square = 0, momentum = 0, gap_scale = 0;
    RETURN_IF_ERROR(in->ReadU64(&chunk.index, "chunk index"));
    RETURN_IF_ERROR(in->ReadU64(&weights, "weights length"));
    RETURN_IF_ERROR(in->ReadU64(&mean_square, "mean_square length"));
    RETURN_IF_ERROR(in->ReadU64(&momentum, "momentum length"));
    if (format_version >= 2) RETURN_IF_ERROR(in->ReadU64(&gap_scale, "gap_scale length"));
    if (absl::Status s =
            CheckChunk(spec, previous, chunk.index, weights, mean_square, momentum, gap_scale);
        !s.ok()) {
      return inconsistent(s);
    }
    previous = static_cast<int64_t>(chunk.index);
    RETURN_IF_ERROR(in->ReadFloats(weights, &chunk.weights, "weights"));
    RETURN_IF_ERROR(in->ReadFloats(mean_square, &chunk.mean_square, "mean_square"));
    RETURN_IF_ERROR(in->ReadFloats(momentum, &chunk.momentum, "momentum"));
    RETURN_IF_ERROR(in->ReadFloats(gap_scale, &chunk.gap_scale, "gap_scale"));
    tensor->chunks.push_back(std::move(chunk));
  }
  return absl::OkStatus();
}

absl::Status ReadSnapshot(ChecksummedFileReader* in, ShardSnapshot* snapshot) {
  // Turns a consistency failure into DATA_LOSS naming the file.
  auto inconsistent = [in](const absl::Status& s) {
    return in->DataLoss(absl::StrCat("inconsistent: ", s.message()));
  };

  char magic[sizeof(kMagic)];
  RETURN_IF_ERROR(in->Read(magic, sizeof(magic), "magic"));
  if (std::memcmp(magic, kMagic, sizeof(kMagic)) != 0) {
    return in->DataLoss("bad magic: not a dcasgd checkpoint");
  }
  uint32_t format_version = 0;
  RETURN_IF_ERROR(in->ReadU32(&format_version, "format version"));
  if (format_version < kOldestFormatVersion || format_version > kFormatVersion) {
    return in->DataLoss(absl::StrCat("unsupported format version ", format_version,
                                     " (this build reads versions ", kOldestFormatVersion, " to ",
                                     kFormatVersion, ")"));
  }
  RETURN_IF_ERROR(in->ReadU32(&snapshot->shard_index, "shard index"));
  RETURN_IF_ERROR(in->ReadU32(&snapshot->shard_count, "shard count"));
  if (absl::Status s = CheckShard(snapshot->shard_index, snapshot->shard_count); !s.ok()) {
    return inconsistent(s);
  }
  RETURN_IF_ERROR(in->ReadU64(&snapshot->version, "version"));
  uint64_t tensor_count = 0;
  RETURN_IF_ERROR(in->ReadU64(&tensor_count, "tensor count"));

  std::set<std::string> names;
  for (uint64_t t = 0; t < tensor_count; ++t) {
    TensorState tensor;
    RETURN_IF_ERROR(ReadTensor(in, format_version, &names, &tensor));
    snapshot->tensors.push_back(std::move(tensor));
  }
  return in->VerifyTrailer();
}

}  // namespace

absl::StatusOr<uint64_t> WriteCheckpoint(const std::string& path, const ShardSnapshot& snapshot) {
  if (absl::Status s = ValidateSnapshot(snapshot); !s.ok()) {
    return absl::InvalidArgumentError(absl::StrCat("checkpoint ", path, ": ", s.message()));
  }
  ASSIGN_OR_RETURN(std::unique_ptr<AtomicFileWriter> file,
                   AtomicFileWriter::Create(path, "checkpoint"));
  ChecksummedFileWriter writer(file.get());
  RETURN_IF_ERROR(WriteSnapshot(snapshot, &writer));
  RETURN_IF_ERROR(file->Commit(/*durable=*/true));
  return writer.bytes();
}

absl::StatusOr<ShardSnapshot> ReadCheckpoint(const std::string& path) {
  const int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return FileError(errno, path, "open");
  struct stat st;
  if (fstat(fd, &st) != 0) {
    const int err = errno;
    close(fd);
    return FileError(err, path, "fstat");
  }
  if (!S_ISREG(st.st_mode)) {
    close(fd);
    return absl::FailedPreconditionError(absl::StrCat("checkpoint ", path, ": not a regular file"));
  }
  ChecksummedFileReader reader(fd, path, static_cast<uint64_t>(st.st_size));
  ShardSnapshot snapshot;
  const absl::Status status = ReadSnapshot(&reader, &snapshot);
  close(fd);
  RETURN_IF_ERROR(status);
  return snapshot;
}

}  // namespace dcasgd
