#include "storage/s3_signing.h"

#include <string>

#include "gtest/gtest.h"

namespace dcasgd::storage {
namespace {

TEST(UriEncode, KeepsUnreservedCharacters) {
  const std::string unreserved =
      "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~";
  EXPECT_EQ(UriEncode(unreserved, false), unreserved);
  EXPECT_EQ(UriEncode(unreserved, true), unreserved);
}

TEST(UriEncode, EncodesReservedWithUppercaseHex) {
  EXPECT_EQ(UriEncode(" ", false), "%20");  // never '+'
  EXPECT_EQ(UriEncode("+", false), "%2B");
  EXPECT_EQ(UriEncode("*", false), "%2A");
  EXPECT_EQ(UriEncode("=&?#%", false), "%3D%26%3F%23%25");
  EXPECT_EQ(UriEncode(":@!$'()[],;", false), "%3A%40%21%24%27%28%29%5B%5D%2C%3B");
}

TEST(UriEncode, EncodesUtf8BytesAndControlBytes) {
  EXPECT_EQ(UriEncode("\xC3\xA9", false), "%C3%A9");  // é
  EXPECT_EQ(UriEncode(std::string("a\0b", 3), false), "a%00b");
  EXPECT_EQ(UriEncode("\x7F\xFF", false), "%7F%FF");
}

TEST(UriEncode, SlashKeptOnlyForPaths) {
  EXPECT_EQ(UriEncode("train/shard 1.dsd", true), "train/shard%201.dsd");
  EXPECT_EQ(UriEncode("train/shard 1.dsd", false), "train%2Fshard%201.dsd");
}

TEST(UriEncode, EmptyStaysEmpty) { EXPECT_EQ(UriEncode("", false), ""); }

TEST(CanonicalQueryString, SortsByNameAndEncodes) {
  EXPECT_EQ(CanonicalQueryString({{"prefix", "train/"},
                                  {"list-type", "2"},
                                  {"max-keys", "3"},
                                  {"continuation-token", "a+b/c=="}}),
            "continuation-token=a%2Bb%2Fc%3D%3D&list-type=2&max-keys=3&prefix=train%2F");
}

TEST(CanonicalQueryString, SortsByEncodedNameThenValue) {
  // Sorting happens on the encoded form: '%' (0x25) sorts before letters.
  EXPECT_EQ(CanonicalQueryString({{"b", "2"}, {"b", "1"}, {"a b", "x"}, {"a", ""}}),
            "a=&a%20b=x&b=1&b=2");
}

TEST(CanonicalQueryString, EmptyForNoParameters) { EXPECT_EQ(CanonicalQueryString({}), ""); }

TEST(Sha256Hex, KnownVectors) {
  EXPECT_EQ(Sha256Hex(""), kEmptyPayloadSha256);
  EXPECT_EQ(Sha256Hex(""), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
  EXPECT_EQ(Sha256Hex("abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  EXPECT_EQ(Sha256Hex("The quick brown fox jumps over the lazy dog"),
            "d7a8fbb307d7809469ca9abcb0082e4f8d5651e46d3cdb762d02d0bf37c9e592");
  // FIPS 180-2 two-block message.
  EXPECT_EQ(Sha256Hex("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq"),
            "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1");
}

TEST(Sha256Hex, HashesEmbeddedNulBytes) {
  EXPECT_NE(Sha256Hex(std::string("a\0", 2)), Sha256Hex("a"));
  EXPECT_EQ(Sha256Hex(std::string(1, '\0')),
            "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d");
}

TEST(PathStyleUrl, BuildsEndpointBucketKeyQuery) {
  EXPECT_EQ(PathStyleUrl("http://127.0.0.1:9000", "data", "fm/train/shard 0.dsd", ""),
            "http://127.0.0.1:9000/data/fm/train/shard%200.dsd");
  EXPECT_EQ(PathStyleUrl("https://s3.us-east-1.amazonaws.com/", "data", "", "list-type=2"),
            "https://s3.us-east-1.amazonaws.com/data?list-type=2");
}

TEST(CurlSigV4Param, NamesProviderRegionAndService) {
  EXPECT_EQ(CurlSigV4Param("eu-west-1"), "aws:amz:eu-west-1:s3");
}

}  // namespace
}  // namespace dcasgd::storage
