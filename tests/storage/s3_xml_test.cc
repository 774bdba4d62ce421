#include "storage/s3_xml.h"

#include "gtest/gtest.h"

namespace dcasgd::storage {
namespace {

constexpr char kTruncatedPage[] = R"(<?xml version="1.0" encoding="UTF-8"?>
<ListBucketResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/">
  <Name>bucket</Name><Prefix>fm/</Prefix><KeyCount>2</KeyCount><MaxKeys>2</MaxKeys>
  <IsTruncated>true</IsTruncated>
  <Contents><Key>fm/a&amp;b.dsd</Key><LastModified>2024-01-01T00:00:00.000Z</LastModified>
    <ETag>&quot;abc&quot;</ETag><Size>123</Size><StorageClass>STANDARD</StorageClass></Contents>
  <Contents><Key>fm/c&#x20;d&#233;.dsd</Key><Size> 0 </Size></Contents>
  <NextContinuationToken>tok+en/=</NextContinuationToken>
</ListBucketResult>)";

TEST(ParseListObjectsV2, ReadsObjectsAndContinuationToken) {
  absl::StatusOr<S3ListPage> page = ParseListObjectsV2(kTruncatedPage);
  ASSERT_TRUE(page.ok()) << page.status();
  ASSERT_EQ(page->objects.size(), 2u);
  EXPECT_EQ(page->objects[0].key, "fm/a&b.dsd");
  EXPECT_EQ(page->objects[0].size, 123u);
  EXPECT_EQ(page->objects[1].key, "fm/c d\xC3\xA9.dsd");
  EXPECT_EQ(page->objects[1].size, 0u);
  EXPECT_TRUE(page->is_truncated);
  EXPECT_EQ(page->next_continuation_token, "tok+en/=");
}

TEST(ParseListObjectsV2, LastPageAndEmptyResult) {
  absl::StatusOr<S3ListPage> page = ParseListObjectsV2(
      "<ListBucketResult><Name>b</Name><KeyCount>0</KeyCount>"
      "<IsTruncated>false</IsTruncated></ListBucketResult>");
  ASSERT_TRUE(page.ok()) << page.status();
  EXPECT_TRUE(page->objects.empty());
  EXPECT_FALSE(page->is_truncated);
  EXPECT_EQ(page->next_continuation_token, "");
}

TEST(ParseListObjectsV2, DoesNotConfuseSimilarElementNames) {
  // <KeyCount> must not be read as <Key>, <ContentsX> not as <Contents>.
  absl::StatusOr<S3ListPage> page = ParseListObjectsV2(
      "<ListBucketResult><ContentsX>junk</ContentsX><Contents><KeyCount>9</KeyCount>"
      "<Key>k</Key><Size>5</Size></Contents><IsTruncated>false</IsTruncated>"
      "</ListBucketResult>");
  ASSERT_TRUE(page.ok()) << page.status();
  ASSERT_EQ(page->objects.size(), 1u);
  EXPECT_EQ(page->objects[0].key, "k");
  EXPECT_EQ(page->objects[0].size, 5u);
}

TEST(ParseListObjectsV2, RejectsMalformedDocuments) {
  EXPECT_EQ(ParseListObjectsV2("").status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(ParseListObjectsV2("<Error><Code>X</Code></Error>").status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(ParseListObjectsV2("<ListBucketResult><Contents><Size>1</Size></Contents>"
                               "</ListBucketResult>")
                .status()
                .code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(ParseListObjectsV2("<ListBucketResult><Contents><Key>k</Key><Size>x1</Size>"
                               "</Contents></ListBucketResult>")
                .status()
                .code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(ParseListObjectsV2("<ListBucketResult><IsTruncated>true</IsTruncated>"
                               "</ListBucketResult>")
                .status()
                .code(),
            absl::StatusCode::kInvalidArgument);
  // Cut off in the middle of the document.
  const std::string page = kTruncatedPage;
  EXPECT_FALSE(ParseListObjectsV2(page.substr(0, page.size() / 2)).ok());
}

TEST(ParseS3Error, ReadsCodeAndMessage) {
  const S3ErrorBody error = ParseS3Error(
      "<?xml version=\"1.0\"?><Error><Code>SignatureDoesNotMatch</Code>"
      "<Message>bad &lt;sig&gt;</Message><StringToSign>x</StringToSign></Error>");
  EXPECT_EQ(error.code, "SignatureDoesNotMatch");
  EXPECT_EQ(error.message, "bad <sig>");
}

TEST(ParseS3Error, EmptyOrGarbageGivesEmptyFields) {
  EXPECT_EQ(ParseS3Error("").code, "");
  EXPECT_EQ(ParseS3Error("<html>502 Bad Gateway</html>").message, "");
}

TEST(XmlUnescape, DecodesEntitiesAndKeepsUnknown) {
  EXPECT_EQ(XmlUnescape("&lt;&gt;&amp;&quot;&apos;"), "<>&\"'");
  EXPECT_EQ(XmlUnescape("&#65;&#x42;&#x20AC;"), "AB\xE2\x82\xAC");
  EXPECT_EQ(XmlUnescape("&bogus; & &#xZZ; &"), "&bogus; & &#xZZ; &");
}

}  // namespace
}  // namespace dcasgd::storage
