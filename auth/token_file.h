#ifndef DCASGD_AUTH_TOKEN_FILE_H_
#define DCASGD_AUTH_TOKEN_FILE_H_

#include <cstddef>
#include <string>

#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "auth/roles.h"

namespace dcasgd {
namespace auth {

// Bounds of the token file (a Kubernetes Secret holds at most 1 MiB).
inline constexpr size_t kMaxTokenFileBytes = size_t{1} << 20;
inline constexpr size_t kMinTokenLength = 16;
inline constexpr size_t kMaxTokenLength = 512;
inline constexpr size_t kMaxCallerNameLength = 128;

// Who made a call, once authenticated.
struct Caller {
  Role role = Role::kReader;
  // From the token file's third column (default: the role), or the
  // certificate's identity; appears in messages and logs, never the token.
  std::string name;
};

// The callers of a token file, by token. The file has one caller per line,
// `token role [name]`, separated by blanks; '#' starts a comment line, blank
// lines are skipped. A token is 16 to 512 visible ASCII characters (it
// travels in an HTTP/2 header); the role is reader, worker, admin or
// replication (roles.h).
//
// Tokens are kept as SHA-256 digests only: a lookup compares digests, so its
// timing says nothing useful about a token, and a memory dump holds no token.
// Immutable after Parse; thread-safe.
class TokenTable {
 public:
  TokenTable() = default;

  // INVALID_ARGUMENT naming the line (never echoing a token) for a malformed
  // line, a bad token or role, a duplicate token, or a file above
  // kMaxTokenFileBytes.
  static absl::StatusOr<TokenTable> Parse(absl::string_view text);

  // The caller holding `token`, or nullptr.
  const Caller* Find(absl::string_view token) const;
  size_t size() const { return by_digest_.size(); }

 private:
  absl::flat_hash_map<std::string, Caller> by_digest_;
};

// The SHA-256 of `token`, as 32 raw bytes.
std::string TokenDigest(absl::string_view token);

// Checks one token's length and characters. INVALID_ARGUMENT saying what is
// wrong (without the token).
absl::Status ValidateToken(absl::string_view token);

// A client's token file: the token on its first non-empty line (surrounding
// blanks and the line break are dropped, as `kubectl create secret
// --from-file` and editors leave them). NOT_FOUND or INVALID_ARGUMENT naming
// the file.
absl::StatusOr<std::string> ReadClientToken(const std::string& path);

}  // namespace auth
}  // namespace dcasgd

#endif  // DCASGD_AUTH_TOKEN_FILE_H_
