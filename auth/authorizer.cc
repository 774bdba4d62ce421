#include "auth/authorizer.h"

#include <sys/stat.h>

#include <cstdio>
#include <utility>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "base/file.h"
#include "grpcpp/security/auth_context.h"

namespace dcasgd {
namespace auth {
namespace {

constexpr absl::string_view kBearer = "bearer ";

// inode, size and mtime of `path` (following symlinks, as a Secret volume's
// files are), or "" when it cannot be stat'ed.
std::string FileIdentity(const std::string& path) {
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) return "";
  return absl::StrCat(st.st_dev, ":", st.st_ino, ":", st.st_size, ":", st.st_mtim.tv_sec, ".",
                      st.st_mtim.tv_nsec);
}

absl::StatusOr<TokenTable> ReadTable(const std::string& path) {
  absl::StatusOr<std::string> text = ReadWholeFile(path);
  if (!text.ok()) {
    return absl::Status(text.status().code(),
                        absl::StrCat("--auth_tokens_file '", path, "': ", text.status().message()));
  }
  absl::StatusOr<TokenTable> table = TokenTable::Parse(*text);
  if (!table.ok()) {
    return absl::Status(table.status().code(), absl::StrCat("--auth_tokens_file '", path,
                                                            "': ", table.status().message()));
  }
  return table;
}

std::string Str(const grpc::string_ref& ref) { return std::string(ref.data(), ref.size()); }

}  // namespace

absl::StatusOr<absl::flat_hash_map<std::string, Role>> ParseCertRoles(absl::string_view spec) {
  absl::flat_hash_map<std::string, Role> roles;
  for (absl::string_view item : absl::StrSplit(spec, ',', absl::SkipWhitespace())) {
    item = absl::StripAsciiWhitespace(item);
    const std::vector<absl::string_view> parts = absl::StrSplit(item, absl::MaxSplits('=', 1));
    if (parts.size() != 2 || parts[0].empty()) {
      return absl::InvalidArgumentError(
          absl::StrCat("--auth_cert_roles: '", item,
                       "' is not identity=role (role reader|worker|admin|replication)"));
    }
    absl::StatusOr<Role> role = ParseEnum("role", kRoleNames, parts[1]);
    if (!role.ok()) {
      return absl::InvalidArgumentError(
          absl::StrCat("--auth_cert_roles: '", item, "': ", role.status().message()));
    }
    roles[std::string(parts[0])] = *role;
  }
  return roles;
}

Authorizer::Authorizer(AuthOptions options) : options_(std::move(options)) {}

Authorizer::~Authorizer() {
  if (watch_ != nullptr) watch_->Stop();
}

absl::StatusOr<std::unique_ptr<Authorizer>> Authorizer::Create(AuthOptions options) {
  std::unique_ptr<Authorizer> authorizer(new Authorizer(std::move(options)));
  const std::string& path = authorizer->options_.tokens_file;
  if (path.empty()) return authorizer;
  const std::string identity = FileIdentity(path);
  absl::StatusOr<TokenTable> table = ReadTable(path);
  if (!table.ok()) return table.status();
  {
    absl::MutexLock lock(&authorizer->mu_);
    authorizer->tokens_ = std::make_shared<const TokenTable>(*std::move(table));
    authorizer->file_identity_ = identity;
  }
  Authorizer* self = authorizer.get();
  authorizer->watch_ = std::make_unique<PeriodicTask>(authorizer->options_.reload_interval, [self] {
    if (absl::Status s = self->ReloadIfChanged(); !s.ok()) {
      std::fprintf(stderr, "dcasgd-ps: keeping the previous tokens: %s\n",
                   std::string(s.message()).c_str());
    }
  });
  return authorizer;
}

absl::Status Authorizer::ReloadIfChanged() {
  const std::string& path = options_.tokens_file;
  if (path.empty()) return absl::OkStatus();
  const std::string identity = FileIdentity(path);
  {
    absl::MutexLock lock(&mu_);
    if (identity == file_identity_) return absl::OkStatus();
  }
  absl::StatusOr<TokenTable> table = ReadTable(path);
  absl::MutexLock lock(&mu_);
  // Remembered even when it fails, so a broken file is reported once, not
  // at every check.
  file_identity_ = identity;
  if (!table.ok()) return table.status();
  tokens_ = std::make_shared<const TokenTable>(*std::move(table));
  std::fprintf(stderr, "dcasgd-ps: reloaded %s: %zu tokens\n", path.c_str(), tokens_->size());
  return absl::OkStatus();
}

size_t Authorizer::token_count() const {
  absl::MutexLock lock(&mu_);
  return tokens_ == nullptr ? 0 : tokens_->size();
}

absl::StatusOr<Caller> Authorizer::Authenticate(const grpc::ServerContextBase& context) const {
  if (!enabled()) return Caller{Role::kAdmin, "anonymous (authentication off)"};
  const auto& metadata = context.client_metadata();
  if (auto it = metadata.find("authorization"); it != metadata.end()) {
    absl::string_view value(it->second.data(), it->second.size());
    if (value.size() <= kBearer.size() ||
        !absl::EqualsIgnoreCase(value.substr(0, kBearer.size()), kBearer)) {
      return absl::UnauthenticatedError("the 'authorization' metadata is not 'Bearer <token>'");
    }
    std::shared_ptr<const TokenTable> tokens;
    {
      absl::MutexLock lock(&mu_);
      tokens = tokens_;
    }
    const Caller* caller = tokens == nullptr ? nullptr : tokens->Find(value.substr(kBearer.size()));
    if (caller == nullptr) {
      return absl::UnauthenticatedError(
          "this server does not know the bearer token sent: check the caller's token file "
          "against the server's --auth_tokens_file (a rotated token is refused once the server "
          "reloads the file)");
    }
    return *caller;
  }
  const std::shared_ptr<const grpc::AuthContext> auth = context.auth_context();
  if (!options_.cert_roles.empty() && auth != nullptr && auth->IsPeerAuthenticated()) {
    std::string names;
    for (const grpc::string_ref& identity : auth->GetPeerIdentity()) {
      if (auto it = options_.cert_roles.find(Str(identity)); it != options_.cert_roles.end()) {
        return Caller{it->second, absl::StrCat("certificate ", Str(identity))};
      }
      absl::StrAppend(&names, names.empty() ? "" : ", ", Str(identity));
    }
    return absl::PermissionDeniedError(
        absl::StrCat("the client certificate (", names,
                     ") has no role: send a bearer token, or map the identity in the shard's "
                     "--auth_cert_roles"));
  }
  return absl::UnauthenticatedError(
      "no credentials: this server requires a bearer token (metadata 'authorization: Bearer "
      "<token>'; dcasgd-worker --auth_token_file, Python token_file=) or a client certificate "
      "with a role");
}

absl::Status Authorizer::Check(const Caller& caller, Action action) {
  if (RoleAllows(caller.role, action)) return absl::OkStatus();
  return absl::PermissionDeniedError(absl::StrCat(
      "'", caller.name, "' has role ", NameOf(kRoleNames, caller.role), ", which may not call ",
      ActionName(action), "; that needs role ", NameOf(kRoleNames, RequiredRole(action)),
      RequiredRole(action) == Role::kReplication ? " or admin" : "",
      " (docs/security.md, \"Roles\")"));
}

absl::Status Authorizer::Authorize(const grpc::ServerContextBase& context, Action action) const {
  absl::StatusOr<Caller> caller = Authenticate(context);
  if (!caller.ok()) return caller.status();
  return Check(*caller, action);
}

}  // namespace auth
}  // namespace dcasgd
