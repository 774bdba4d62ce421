#ifndef DCASGD_AUTH_SERVER_FLAGS_H_
#define DCASGD_AUTH_SERVER_FLAGS_H_

#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "auth/authorizer.h"
#include "auth/tls.h"

namespace dcasgd::auth {

// How a server's own ports are secured, from the flags every dcasgd server
// takes alike (dcasgd-ps, dcasgd-witness; docs/security.md): --tls_cert,
// --tls_key, --tls_ca, --tls_reload_seconds, --auth_tokens_file,
// --auth_reload_seconds, --auth_cert_roles and --health_listen.
struct ServerSecurity {
  ServerTlsFiles tls;
  AuthOptions auth;
  // A plaintext port serving only grpc.health.v1; empty: none.
  std::string health_listen;
};

// Reads the flags above and checks them together (TLS needs a certificate
// and its key; certificate roles need a client CA). INVALID_ARGUMENT naming
// the flag.
absl::StatusOr<ServerSecurity> ServerSecurityFromFlags();

// "tls=off|on|mutual auth=off|tokens|certificates|tokens+certificates", for
// a server's start-up line.
std::string DescribeServerSecurity(const ServerTlsFiles& tls, const AuthOptions& auth);

// The file that defines the flags above: a FlagSet (base/flags.h) of a
// server names it beside its own options file.
absl::string_view ServerSecurityFlagsFile();

}  // namespace dcasgd::auth

#endif  // DCASGD_AUTH_SERVER_FLAGS_H_
