#ifndef DCASGD_BASE_SECRET_H_
#define DCASGD_BASE_SECRET_H_

// Bearer secrets: a worker's session with a shard, a data lease's secret.
// They are raw bytes; they never go into logs, metrics, status or errors.

#include <cstddef>
#include <string>

#include "absl/strings/string_view.h"
#include "base/random.h"

namespace dcasgd {

// Bytes of every secret: 128 bits, too many to guess.
inline constexpr size_t kSecretBytes = 16;

// kSecretBytes fresh bytes from `random` (RandomSource::Secure() in the
// binaries: the kernel's CSPRNG). Thread-safe when `random` is.
std::string NewSecret(RandomSource* random);

// Whether `presented` equals `expected`, in time that depends only on their
// lengths (OpenSSL's CRYPTO_memcmp), so the time of a refusal does not tell
// how many leading bytes a guess got right. False when the lengths differ
// (lengths are not secret) or `expected` is empty.
bool SecretMatches(absl::string_view presented, absl::string_view expected);

// SHA-256 of `secret` (32 raw bytes): what is kept on disk instead of the
// secret, so that reading a state file does not give the secret away.
std::string SecretDigest(absl::string_view secret);

}  // namespace dcasgd

#endif  // DCASGD_BASE_SECRET_H_
