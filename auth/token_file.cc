#include "auth/token_file.h"

#include <openssl/sha.h>

#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "base/file.h"

namespace dcasgd {
namespace auth {

std::string TokenDigest(absl::string_view token) {
  unsigned char digest[SHA256_DIGEST_LENGTH];
  SHA256(reinterpret_cast<const unsigned char*>(token.data()), token.size(), digest);
  return std::string(reinterpret_cast<const char*>(digest), sizeof(digest));
}

absl::Status ValidateToken(absl::string_view token) {
  if (token.size() < kMinTokenLength || token.size() > kMaxTokenLength) {
    return absl::InvalidArgumentError(absl::StrCat("a token has ", token.size(),
                                                   " characters; it must have ", kMinTokenLength,
                                                   " to ", kMaxTokenLength));
  }
  for (const char c : token) {
    if (c < 0x21 || c > 0x7e) {
      return absl::InvalidArgumentError(
          "a token may hold only visible ASCII characters (no blanks or control characters)");
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<TokenTable> TokenTable::Parse(absl::string_view text) {
  if (text.size() > kMaxTokenFileBytes) {
    return absl::InvalidArgumentError(
        absl::StrCat("the token file has ", text.size(), " bytes; at most ", kMaxTokenFileBytes));
  }
  TokenTable table;
  int line_number = 0;
  for (absl::string_view line : absl::StrSplit(text, '\n')) {
    ++line_number;
    line = absl::StripAsciiWhitespace(line);
    if (line.empty() || line.front() == '#') continue;
    const std::vector<absl::string_view> fields =
        absl::StrSplit(line, absl::ByAnyChar(" \t"), absl::SkipEmpty());
    const auto error = [line_number](absl::string_view why) {
      return absl::InvalidArgumentError(absl::StrCat(
          "token file line ", line_number, ": ", why,
          " (each line is 'token role [name]', role reader|worker|admin|replication)"));
    };
    if (fields.size() < 2 || fields.size() > 3) {
      return error(absl::StrCat("has ", fields.size(), " fields"));
    }
    if (absl::Status s = ValidateToken(fields[0]); !s.ok()) return error(s.message());
    absl::StatusOr<Role> role = ParseEnum("role", kRoleNames, fields[1]);
    if (!role.ok()) return error(role.status().message());
    Caller caller{*role, std::string(fields.size() == 3 ? fields[2] : fields[1])};
    if (caller.name.size() > kMaxCallerNameLength) {
      return error(absl::StrCat("the name is longer than ", kMaxCallerNameLength, " characters"));
    }
    if (!table.by_digest_.emplace(TokenDigest(fields[0]), std::move(caller)).second) {
      return error("repeats the token of an earlier line");
    }
  }
  return table;
}

const Caller* TokenTable::Find(absl::string_view token) const {
  auto it = by_digest_.find(TokenDigest(token));
  return it == by_digest_.end() ? nullptr : &it->second;
}

absl::StatusOr<std::string> ReadClientToken(const std::string& path) {
  absl::StatusOr<std::string> text = ReadWholeFile(path);
  if (!text.ok()) {
    return absl::Status(text.status().code(),
                        absl::StrCat("token file '", path, "': ", text.status().message()));
  }
  if (text->size() > kMaxTokenFileBytes) {
    return absl::InvalidArgumentError(absl::StrCat("token file '", path, "' is too large"));
  }
  for (absl::string_view line : absl::StrSplit(*text, '\n')) {
    line = absl::StripAsciiWhitespace(line);
    if (line.empty()) continue;
    if (absl::Status s = ValidateToken(line); !s.ok()) {
      return absl::InvalidArgumentError(absl::StrCat("token file '", path, "': ", s.message()));
    }
    return std::string(line);
  }
  return absl::InvalidArgumentError(absl::StrCat("token file '", path, "' holds no token"));
}

}  // namespace auth
}  // namespace dcasgd
