#include "base/secret.h"

#include <openssl/crypto.h>
#include <openssl/evp.h>

#include <cstdint>
#include <cstring>

#include "base/check.h"

namespace dcasgd {

std::string NewSecret(RandomSource* random) {
  static_assert(kSecretBytes % sizeof(uint64_t) == 0);
  std::string secret(kSecretBytes, '\0');
  for (size_t i = 0; i < kSecretBytes; i += sizeof(uint64_t)) {
    const uint64_t bits = random->Next64();
    std::memcpy(secret.data() + i, &bits, sizeof(bits));
  }
  return secret;
}

bool SecretMatches(absl::string_view presented, absl::string_view expected) {
  if (expected.empty() || presented.size() != expected.size()) return false;
  return CRYPTO_memcmp(presented.data(), expected.data(), expected.size()) == 0;
}

std::string SecretDigest(absl::string_view secret) {
  std::string digest(EVP_MAX_MD_SIZE, '\0');
  unsigned int size = 0;
  // EVP_Digest fails only on allocation failure or a broken OpenSSL install.
  DCASGD_CHECK(EVP_Digest(secret.data(), secret.size(),
                          reinterpret_cast<unsigned char*>(digest.data()), &size, EVP_sha256(),
                          nullptr) == 1);
  digest.resize(size);
  return digest;
}

}  // namespace dcasgd
