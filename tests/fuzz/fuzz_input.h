#ifndef DCASGD_TESTS_FUZZ_FUZZ_INPUT_H_
#define DCASGD_TESTS_FUZZ_FUZZ_INPUT_H_

// What the fuzz targets share: reading a fuzzer's bytes as a script of
// requests, and the checks that hold for every answer to any input.
//
// A script is a sequence of records, each a 1-byte selector, a 2-byte
// little-endian length and that many bytes (the length is cut to what is
// left; a stream's messages inside a record are length and bytes only), so that one input can
// declare, join and then push, and the fuzzer can mutate each request's bytes on their own.
// tests/fuzz/make_corpus.cc writes seeds in this format from real requests.

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <string>
#include <system_error>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "wire/status.h"

namespace dcasgd::fuzz {

class FuzzInput {
 public:
  FuzzInput(const uint8_t* data, size_t size) : data_(data), size_(size) {}

  bool empty() const { return pos_ >= size_; }
  uint8_t Byte() { return empty() ? 0 : data_[pos_++]; }
  // The next length-prefixed record (shorter when the input ends first).
  absl::string_view Record() {
    size_t n = Byte();
    n |= size_t{Byte()} << 8;
    if (n > size_ - pos_) n = size_ - pos_;
    absl::string_view r(reinterpret_cast<const char*>(data_ + pos_), n);
    pos_ += n;
    return r;
  }
  absl::string_view Rest() {
    absl::string_view r(reinterpret_cast<const char*>(data_ + pos_), size_ - pos_);
    pos_ = size_;
    return r;
  }

 private:
  const uint8_t* data_;
  size_t size_;
  size_t pos_ = 0;
};

// Appends what Record() reads back: a length and the bytes (make_corpus.cc).
inline void AppendBytes(std::string* script, absl::string_view bytes) {
  const size_t n = bytes.size() < 0xffff ? bytes.size() : 0xffff;
  script->push_back(static_cast<char>(n & 0xff));
  script->push_back(static_cast<char>(n >> 8));
  script->append(bytes.data(), n);
}
// Appends one request of a script: its selector, then AppendBytes.
inline void AppendRecord(std::string* script, uint8_t selector, absl::string_view bytes) {
  script->push_back(static_cast<char>(selector));
  AppendBytes(script, bytes);
}

// A broken invariant: report it and abort, which libFuzzer (and the corpus
// driver) records as a crash with the input that caused it.
[[noreturn]] inline void Fail(const char* what, const absl::Status& status = absl::OkStatus()) {
  std::fprintf(stderr, "fuzz invariant broken: %s (status: %s)\n", what, status.ToString().c_str());
  std::abort();
}

// A directory of this process for the files a target reads and writes
// (checkpoint_fuzz.cc, schedule_fuzz.cc): made under $TMPDIR (or /tmp) on
// the first call, removed with what it holds when the process exits.
// Thread-safe (a function-local static); a directory that cannot be made is
// a broken invariant (Fail).
inline const std::string& ScratchDir() {
  static const std::string* const dir = [] {
    const char* tmp = std::getenv("TMPDIR");
    std::string pattern = absl::StrCat(tmp != nullptr ? tmp : "/tmp", "/dcasgd-fuzz-XXXXXX");
    if (mkdtemp(pattern.data()) == nullptr) Fail("mkdtemp");
    std::atexit([] {
      std::error_code ignored;  // nothing to do about a directory that will not go
      std::filesystem::remove_all(ScratchDir(), ignored);
    });
    return new std::string(std::move(pattern));
  }();
  return *dir;
}

// The longest status message any answer may carry: error messages quote
// names and numbers, never unbounded input (docs/security.md), and gRPC's
// default metadata limit is 8 KiB.
inline constexpr size_t kMaxStatusMessageBytes = 4096;

// What every answer to a request must be: OK, or an error a client can act
// on (the code of bad input, missing state or exhaustion) with a bounded,
// non-empty message, unchanged at the RPC edge. INTERNAL, UNKNOWN, UNIMPLEMENTED or DATA_LOSS for a
// request are bugs.
inline void CheckAnswer(const absl::Status& status) {
  // DCASGD_FUZZ_TRACE=1 shows every answer (what a seed reaches).
  static const bool trace = std::getenv("DCASGD_FUZZ_TRACE") != nullptr;
  if (trace) std::fprintf(stderr, "answer: %s\n", status.ToString().c_str());
  if (status.ok()) return;
  switch (status.code()) {
    case absl::StatusCode::kInvalidArgument:
    case absl::StatusCode::kNotFound:
    case absl::StatusCode::kAlreadyExists:
    case absl::StatusCode::kFailedPrecondition:
    case absl::StatusCode::kResourceExhausted:
    case absl::StatusCode::kOutOfRange:
    case absl::StatusCode::kAborted:
    case absl::StatusCode::kUnavailable:
    case absl::StatusCode::kUnauthenticated:  // a worker session or lease secret
      break;
    default:
      Fail("a request got an error code no client can act on", status);
  }
  if (status.message().empty()) Fail("an error without a message", status);
  if (status.message().size() > kMaxStatusMessageBytes) Fail("an unbounded error message", status);
  // The RPC edge (wire/status.h) keeps the code and the message.
  const grpc::Status edge = ToGrpcStatus(status);
  if (static_cast<int>(edge.error_code()) != static_cast<int>(status.code()) ||
      edge.error_message() != status.message()) {
    Fail("the status changed on its way to the wire", status);
  }
}

}  // namespace dcasgd::fuzz

#endif  // DCASGD_TESTS_FUZZ_FUZZ_INPUT_H_
