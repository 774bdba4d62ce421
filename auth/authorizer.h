#ifndef DCASGD_AUTH_AUTHORIZER_H_
#define DCASGD_AUTH_AUTHORIZER_H_

#include <memory>
#include <string>

#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "auth/roles.h"
#include "auth/token_file.h"
#include "base/periodic_task.h"
#include "grpcpp/server_context.h"

namespace dcasgd {
namespace auth {

// How a server tells who calls it. Authentication is on when either source
// is given; with neither every caller may do everything (local runs).
struct AuthOptions {
  // The token file (TokenTable's format); empty: no bearer tokens.
  std::string tokens_file;
  // Identity of a verified mTLS client certificate (a subject alternative
  // name, else the common name) -> role. Needs a server with a client CA.
  absl::flat_hash_map<std::string, Role> cert_roles;
  // How often the token file is checked for changes (a rotated Secret).
  absl::Duration reload_interval = absl::Seconds(5);

  bool enabled() const { return !tokens_file.empty() || !cert_roles.empty(); }
};

// Parses "identity=role,identity=role" (blanks around items ignored; empty:
// no mapping). INVALID_ARGUMENT naming the item.
absl::StatusOr<absl::flat_hash_map<std::string, Role>> ParseCertRoles(absl::string_view spec);

// The server's check of every call of the dcasgd services (health and
// reflection are not checked: they stay open). A call is authenticated by
// the metadata `authorization: Bearer <token>` (a token of the token file),
// else by its verified client certificate when that identity has a role;
// then its role must allow the action (roles.h).
//
// Errors are what the caller should do: UNAUTHENTICATED (no credentials, a
// malformed header, or a token the shard does not know: fix the caller's
// token), PERMISSION_DENIED (known caller, role too weak: use another
// token or change the caller's role). Messages name the caller and the
// action, never a token.
//
// The token file is re-read when it changes (checked every
// reload_interval; a Kubernetes Secret update replaces it): new tokens work
// and removed ones stop working without a restart. A file that fails to
// parse keeps the previous tokens and logs the error to stderr.
//
// Thread-safe; Authenticate and Authorize never block on I/O.
class Authorizer {
 public:
  // Reads the token file (NOT_FOUND or INVALID_ARGUMENT naming it) and
  // starts watching it. With options.enabled() false, allows everything.
  static absl::StatusOr<std::unique_ptr<Authorizer>> Create(AuthOptions options);
  ~Authorizer();
  Authorizer(const Authorizer&) = delete;
  Authorizer& operator=(const Authorizer&) = delete;

  bool enabled() const { return options_.enabled(); }

  // Who makes the call in `context`; a full-rights anonymous caller when
  // authentication is off.
  absl::StatusOr<Caller> Authenticate(const grpc::ServerContextBase& context) const;
  // OK when `caller`'s role allows `action`, else PERMISSION_DENIED.
  static absl::Status Check(const Caller& caller, Action action);
  // Authenticate, then Check.
  absl::Status Authorize(const grpc::ServerContextBase& context, Action action) const;

  // Re-reads the token file if its identity (inode, size, mtime) changed
  // since the last read; the watch calls it. Returns the parse or read error
  // (the previous tokens stay).
  absl::Status ReloadIfChanged();
  size_t token_count() const;

 private:
  explicit Authorizer(AuthOptions options);

  // Constant after construction.
  const AuthOptions options_;

  mutable absl::Mutex mu_;
  // Replaced whole on reload, so readers hold the lock only to copy it.
  std::shared_ptr<const TokenTable> tokens_ ABSL_GUARDED_BY(mu_);
  std::string file_identity_ ABSL_GUARDED_BY(mu_);

  std::unique_ptr<PeriodicTask> watch_;  // null when there is no token file
};

}  // namespace auth
}  // namespace dcasgd

#endif  // DCASGD_AUTH_AUTHORIZER_H_
