#ifndef DCASGD_AUTH_TLS_H_
#define DCASGD_AUTH_TLS_H_

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "grpcpp/channel.h"
#include "grpcpp/security/server_credentials.h"
#include "grpcpp/support/channel_arguments.h"

namespace dcasgd {
namespace auth {

// A server's TLS files (PEM). All empty: plaintext.
struct ServerTlsFiles {
  std::string cert;  // certificate chain, server's first
  std::string key;   // its private key
  // CA bundle of the client certificates: set, every client must present a
  // certificate it signed (mutual TLS), or the handshake fails.
  std::string client_ca;
  // How often gRPC checks the files for a new certificate or CA.
  absl::Duration reload_interval = absl::Seconds(10);

  bool enabled() const { return !cert.empty() || !key.empty() || !client_ca.empty(); }
};

// The credentials to serve with: insecure when `files` is empty; else TLS
// (mTLS with client_ca) whose files gRPC re-reads every reload_interval, so
// a renewed certificate or CA is used for new connections without a restart
// (write the files atomically: a key and certificate that do not match are
// ignored until they do). Reads and checks every file first: INVALID_ARGUMENT
// naming the flag for a missing pair, an unreadable or non-PEM file, or a key
// that does not match the certificate.
absl::StatusOr<std::shared_ptr<grpc::ServerCredentials>> MakeServerCredentials(
    const ServerTlsFiles& files);

// What a client connects with (file paths). All empty: plaintext, no token.
struct ClientSecurity {
  // CA bundle that signed the shards' certificates: set, TLS is on.
  std::string ca;
  // Client certificate and key, for shards that require mutual TLS.
  std::string cert;
  std::string key;
  // The name to verify in the shards' certificates instead of the host of
  // each address (e.g. when connecting through an IP or a port-forward).
  std::string server_name;
  // File holding the bearer token sent with every call (ReadClientToken).
  std::string token_file;
};

// A client's loaded credentials: the files are read once here; restart the
// client to use renewed ones. Immutable; thread-safe.
class ClientCredentials {
 public:
  // INVALID_ARGUMENT / NOT_FOUND naming the flag for unreadable or malformed
  // files, a certificate without its key, or client files without a CA.
  static absl::StatusOr<std::shared_ptr<const ClientCredentials>> Load(
      const ClientSecurity& security);
  // Plaintext without a token (local runs, tests).
  static std::shared_ptr<const ClientCredentials> Insecure();

  // A channel to `address` with these credentials: TLS when a CA was given,
  // and the token (if any) on every call, plaintext or not.
  std::shared_ptr<grpc::Channel> NewChannel(const std::string& address,
                                            grpc::ChannelArguments args) const;

  bool tls() const { return tls_; }
  bool has_token() const { return !token_.empty(); }

 private:
  ClientCredentials() = default;

  bool tls_ = false;
  std::string root_certs_;
  std::string cert_chain_;
  std::string private_key_;
  std::string server_name_;
  std::string token_;
};

}  // namespace auth
}  // namespace dcasgd

#endif  // DCASGD_AUTH_TLS_H_
