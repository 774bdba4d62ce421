#include "auth/server_flags.h"

#include "absl/flags/flag.h"
#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/time/time.h"
#include "base/flags.h"
#include "base/status_macros.h"

ABSL_FLAG(std::string, tls_cert, "",
          "PEM certificate chain of this server; with --tls_key turns TLS on (re-read when it "
          "changes)");
ABSL_FLAG(std::string, tls_key, "", "PEM private key of --tls_cert");
ABSL_FLAG(std::string, tls_ca, "",
          "PEM CA bundle of the client certificates: every client must present one it signed "
          "(mutual TLS); empty: no client certificates");
ABSL_FLAG(double, tls_reload_seconds, 10,
          "how often the TLS files are checked for a renewed certificate or CA");
ABSL_FLAG(std::string, health_listen, "",
          "host:port of a plaintext port serving only grpc.health.v1 (and reflection), for "
          "probes that cannot speak TLS such as Kubernetes' gRPC probes; empty: none");
ABSL_FLAG(std::string, auth_tokens_file, "",
          "bearer tokens, one 'token role [name]' per line (a shard's roles: reader, worker, "
          "admin; the witness's: replication, admin; docs/security.md); turns authentication "
          "on; re-read when it changes. Empty: no tokens");
ABSL_FLAG(double, auth_reload_seconds, 5,
          "how often --auth_tokens_file is checked for changes (a rotated Secret)");
ABSL_FLAG(std::string, auth_cert_roles, "",
          "with --tls_ca: roles of client-certificate identities (SAN or CN), "
          "'identity=role,...'; turns authentication on");

namespace dcasgd::auth {
absl::StatusOr<ServerSecurity> ServerSecurityFromFlags() {
  ServerSecurity security;
  security.health_listen = absl::GetFlag(FLAGS_health_listen);
  ServerTlsFiles& tls = security.tls;
  tls.cert = absl::GetFlag(FLAGS_tls_cert);
  tls.key = absl::GetFlag(FLAGS_tls_key);
  tls.client_ca = absl::GetFlag(FLAGS_tls_ca);
  if (tls.enabled() && (tls.cert.empty() || tls.key.empty())) {
    return absl::InvalidArgumentError(
        "TLS needs both --tls_cert and --tls_key (--tls_ca adds mutual TLS)");
  }
  ASSIGN_OR_RETURN(tls.reload_interval,
                   SecondsFlag("tls_reload_seconds", absl::GetFlag(FLAGS_tls_reload_seconds),
                               /*zero_ok=*/false));
  AuthOptions& auth = security.auth;
  auth.tokens_file = absl::GetFlag(FLAGS_auth_tokens_file);
  ASSIGN_OR_RETURN(auth.reload_interval,
                   SecondsFlag("auth_reload_seconds", absl::GetFlag(FLAGS_auth_reload_seconds),
                               /*zero_ok=*/false));
  ASSIGN_OR_RETURN(auth.cert_roles, ParseCertRoles(absl::GetFlag(FLAGS_auth_cert_roles)));
  if (!auth.cert_roles.empty() && tls.client_ca.empty()) {
    return absl::InvalidArgumentError(
        "--auth_cert_roles needs --tls_ca: without mutual TLS there are no client certificates");
  }
  return security;
}

std::string DescribeServerSecurity(const ServerTlsFiles& tls, const AuthOptions& auth) {
  const char* tls_mode = !tls.enabled() ? "off" : (tls.client_ca.empty() ? "on" : "mutual");
  std::string auth_mode = "off";
  if (auth.enabled()) {
    auth_mode = absl::StrCat(auth.tokens_file.empty() ? "" : "tokens",
                             auth.tokens_file.empty() || auth.cert_roles.empty() ? "" : "+",
                             auth.cert_roles.empty() ? "" : "certificates");
  }
  return absl::StrCat("tls=", tls_mode, " auth=", auth_mode);
}

absl::string_view ServerSecurityFlagsFile() { return __FILE__; }

}  // namespace dcasgd::auth
