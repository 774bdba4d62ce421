#include "auth/tls.h"

#include <openssl/bio.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

#include <algorithm>
#include <cstdint>
#include <utility>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "auth/token_file.h"
#include "base/file.h"
#include "grpcpp/create_channel.h"
#include "grpcpp/security/credentials.h"
#include "grpcpp/security/tls_certificate_provider.h"
#include "grpcpp/security/tls_credentials_options.h"
#include "grpcpp/support/client_interceptor.h"

namespace dcasgd {
namespace auth {
namespace {

// Certificates and keys are small; anything larger is not one.
constexpr size_t kMaxPemBytes = size_t{1} << 20;

absl::StatusOr<std::string> ReadPem(absl::string_view flag, const std::string& path) {
  absl::StatusOr<std::string> text = ReadWholeFile(path);
  if (!text.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat("--", flag, "='", path, "': ", text.status().message()));
  }
  if (text->size() > kMaxPemBytes || !absl::StrContains(*text, "-----BEGIN ")) {
    return absl::InvalidArgumentError(
        absl::StrCat("--", flag, "='", path, "': not a PEM file (no '-----BEGIN ' line)"));
  }
  return text;
}

// OK when `key_pem` is the private key of the first certificate of
// `cert_pem`; INVALID_ARGUMENT naming the flags otherwise.
absl::Status CheckKeyMatches(absl::string_view cert_flag, const std::string& cert_pem,
                             absl::string_view key_flag, const std::string& key_pem) {
  BIO* cert_bio = BIO_new_mem_buf(cert_pem.data(), static_cast<int>(cert_pem.size()));
  X509* cert = PEM_read_bio_X509(cert_bio, nullptr, nullptr, nullptr);
  BIO_free(cert_bio);
  BIO* key_bio = BIO_new_mem_buf(key_pem.data(), static_cast<int>(key_pem.size()));
  EVP_PKEY* key = PEM_read_bio_PrivateKey(key_bio, nullptr, nullptr, nullptr);
  BIO_free(key_bio);
  absl::Status status;
  if (cert == nullptr) {
    status = absl::InvalidArgumentError(absl::StrCat("--", cert_flag, ": no PEM certificate"));
  } else if (key == nullptr) {
    status = absl::InvalidArgumentError(
        absl::StrCat("--", key_flag, ": no PEM private key (or it is encrypted)"));
  } else if (X509_check_private_key(cert, key) != 1) {
    status = absl::InvalidArgumentError(
        absl::StrCat("--", key_flag, " is not the key of --", cert_flag, "'s certificate"));
  }
  X509_free(cert);
  EVP_PKEY_free(key);
  return status;
}

// Adds `authorization: Bearer <token>` to every call's initial metadata.
class BearerTokenInterceptor final : public grpc::experimental::Interceptor {
 public:
  explicit BearerTokenInterceptor(std::string header) : header_(std::move(header)) {}

  void Intercept(grpc::experimental::InterceptorBatchMethods* methods) override {
    if (methods->QueryInterceptionHookPoint(
            grpc::experimental::InterceptionHookPoints::PRE_SEND_INITIAL_METADATA)) {
      methods->GetSendInitialMetadata()->emplace("authorization", header_);
    }
    methods->Proceed();
  }

 private:
  const std::string header_;
};

class BearerTokenInterceptorFactory final
    : public grpc::experimental::ClientInterceptorFactoryInterface {
 public:
  explicit BearerTokenInterceptorFactory(const std::string& token)
      : header_(absl::StrCat("Bearer ", token)) {}

  grpc::experimental::Interceptor* CreateClientInterceptor(
      grpc::experimental::ClientRpcInfo* info) override {
    return new BearerTokenInterceptor(header_);
  }

 private:
  const std::string header_;
};

}  // namespace

absl::StatusOr<std::shared_ptr<grpc::ServerCredentials>> MakeServerCredentials(
    const ServerTlsFiles& files) {
  if (!files.enabled()) return grpc::InsecureServerCredentials();
  if (files.cert.empty() || files.key.empty()) {
    return absl::InvalidArgumentError(
        "TLS needs both --tls_cert and --tls_key (and --tls_ca for mutual TLS)");
  }
  absl::StatusOr<std::string> cert = ReadPem("tls_cert", files.cert);
  if (!cert.ok()) return cert.status();
  absl::StatusOr<std::string> key = ReadPem("tls_key", files.key);
  if (!key.ok()) return key.status();
  if (absl::Status s = CheckKeyMatches("tls_cert", *cert, "tls_key", *key); !s.ok()) return s;
  if (!files.client_ca.empty()) {
    if (absl::StatusOr<std::string> ca = ReadPem("tls_ca", files.client_ca); !ca.ok()) {
      return ca.status();
    }
  }
  const int64_t seconds = std::max<int64_t>(1, absl::ToInt64Seconds(files.reload_interval));
  auto provider = std::make_shared<grpc::experimental::FileWatcherCertificateProvider>(
      files.key, files.cert, files.client_ca, static_cast<unsigned int>(seconds));
  grpc::experimental::TlsServerCredentialsOptions options(provider);
  options.watch_identity_key_cert_pairs();
  if (files.client_ca.empty()) {
    options.set_cert_request_type(GRPC_SSL_DONT_REQUEST_CLIENT_CERTIFICATE);
  } else {
    options.watch_root_certs();
    options.set_cert_request_type(GRPC_SSL_REQUEST_AND_REQUIRE_CLIENT_CERTIFICATE_AND_VERIFY);
  }
  return grpc::experimental::TlsServerCredentials(options);
}

absl::StatusOr<std::shared_ptr<const ClientCredentials>> ClientCredentials::Load(
    const ClientSecurity& security) {
  std::shared_ptr<ClientCredentials> credentials(new ClientCredentials());
  if (!security.token_file.empty()) {
    absl::StatusOr<std::string> token = ReadClientToken(security.token_file);
    if (!token.ok()) {
      return absl::Status(token.status().code(),
                          absl::StrCat("--auth_token_file: ", token.status().message()));
    }
    credentials->token_ = *std::move(token);
  }
  if (security.ca.empty()) {
    if (!security.cert.empty() || !security.key.empty() || !security.server_name.empty()) {
      return absl::InvalidArgumentError(
          "--tls_cert, --tls_key and --tls_server_name need --tls_ca (the CA that signed the "
          "shards' certificates)");
    }
    return std::shared_ptr<const ClientCredentials>(std::move(credentials));
  }
  credentials->tls_ = true;
  absl::StatusOr<std::string> ca = ReadPem("tls_ca", security.ca);
  if (!ca.ok()) return ca.status();
  credentials->root_certs_ = *std::move(ca);
  if (security.cert.empty() != security.key.empty()) {
    return absl::InvalidArgumentError("a client certificate needs both --tls_cert and --tls_key");
  }
  if (!security.cert.empty()) {
    absl::StatusOr<std::string> cert = ReadPem("tls_cert", security.cert);
    if (!cert.ok()) return cert.status();
    absl::StatusOr<std::string> key = ReadPem("tls_key", security.key);
    if (!key.ok()) return key.status();
    if (absl::Status s = CheckKeyMatches("tls_cert", *cert, "tls_key", *key); !s.ok()) return s;
    credentials->cert_chain_ = *std::move(cert);
    credentials->private_key_ = *std::move(key);
  }
  credentials->server_name_ = security.server_name;
  return std::shared_ptr<const ClientCredentials>(std::move(credentials));
}

std::shared_ptr<const ClientCredentials> ClientCredentials::Insecure() {
  return std::shared_ptr<const ClientCredentials>(new ClientCredentials());
}

std::shared_ptr<grpc::Channel> ClientCredentials::NewChannel(const std::string& address,
                                                             grpc::ChannelArguments args) const {
  std::shared_ptr<grpc::ChannelCredentials> channel_credentials;
  if (tls_) {
    grpc::SslCredentialsOptions options;
    options.pem_root_certs = root_certs_;
    options.pem_cert_chain = cert_chain_;
    options.pem_private_key = private_key_;
    channel_credentials = grpc::SslCredentials(options);
    if (!server_name_.empty()) args.SetSslTargetNameOverride(server_name_);
  } else {
    channel_credentials = grpc::InsecureChannelCredentials();
  }
  if (token_.empty()) return grpc::CreateCustomChannel(address, channel_credentials, args);
  std::vector<std::unique_ptr<grpc::experimental::ClientInterceptorFactoryInterface>> interceptors;
  interceptors.push_back(std::make_unique<BearerTokenInterceptorFactory>(token_));
  return grpc::experimental::CreateCustomChannelWithInterceptors(address, channel_credentials, args,
                                                                 std::move(interceptors));
}

}  // namespace auth
}  // namespace dcasgd
