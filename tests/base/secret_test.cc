#include "base/secret.h"

#include <string>

#include "gtest/gtest.h"

namespace dcasgd {
namespace {

TEST(Secret, FreshSecretsAre128BitsAndDiffer) {
  const std::string a = NewSecret(RandomSource::Secure());
  const std::string b = NewSecret(RandomSource::Secure());
  EXPECT_EQ(a.size(), kSecretBytes);
  EXPECT_EQ(kSecretBytes, 16u);
  EXPECT_NE(a, b);
}

TEST(Secret, MatchesOnlyTheSameBytes) {
  const std::string secret = NewSecret(RandomSource::Secure());
  EXPECT_TRUE(SecretMatches(secret, secret));
  std::string last_bit = secret;
  last_bit.back() ^= 1;
  EXPECT_FALSE(SecretMatches(last_bit, secret));
  EXPECT_FALSE(SecretMatches("", secret));
  EXPECT_FALSE(SecretMatches(secret.substr(0, 15), secret));
  EXPECT_FALSE(SecretMatches(secret + "x", secret));
  // An empty expected secret matches nothing, not even an empty one.
  EXPECT_FALSE(SecretMatches("", ""));
}

TEST(Secret, DigestIsSha256) {
  // FIPS 180-2 test vector: SHA-256("abc").
  const std::string digest = SecretDigest("abc");
  ASSERT_EQ(digest.size(), 32u);
  static constexpr unsigned char kAbc[] = {0xba, 0x78, 0x16, 0xbf, 0x8f, 0x01, 0xcf, 0xea,
                                           0x41, 0x41, 0x40, 0xde, 0x5d, 0xae, 0x22, 0x23,
                                           0xb0, 0x03, 0x61, 0xa3, 0x96, 0x17, 0x7a, 0x9c,
                                           0xb4, 0x10, 0xff, 0x61, 0xf2, 0x00, 0x15, 0xad};
  EXPECT_EQ(digest, std::string(reinterpret_cast<const char*>(kAbc), sizeof(kAbc)));
}

}  // namespace
}  // namespace dcasgd
