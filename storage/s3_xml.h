#ifndef DCASGD_STORAGE_S3_XML_H_
#define DCASGD_STORAGE_S3_XML_H_

// Minimal readers for the two S3 XML documents the client needs: a
// ListObjectsV2 result page and an error body. Not a general XML parser: it
// finds elements by name, tolerates namespaces-free attributes, whitespace,
// an XML declaration and unknown elements, and decodes the five predefined
// entities and numeric character references. Pure and thread-safe.

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace dcasgd::storage {

struct S3ListedObject {
  std::string key;  // full object key, entity-decoded
  uint64_t size = 0;
};

struct S3ListPage {
  std::vector<S3ListedObject> objects;
  bool is_truncated = false;
  std::string next_continuation_token;  // set when is_truncated
};

// Parses a ListBucketResult document. INVALID_ARGUMENT if it is not one, if a
// <Contents> lacks <Key> or has a malformed <Size>, or if it is truncated
// without a NextContinuationToken.
absl::StatusOr<S3ListPage> ParseListObjectsV2(absl::string_view xml);

struct S3ErrorBody {
  std::string code;     // e.g. "SignatureDoesNotMatch"; "" if absent
  std::string message;  // human-readable; "" if absent
};

// Best-effort parse of an <Error> body; never fails (missing fields stay "").
S3ErrorBody ParseS3Error(absl::string_view xml);

// Decodes &amp; &lt; &gt; &quot; &apos; &#N; &#xH; (UTF-8 output). Unknown or
// malformed references are kept verbatim.
std::string XmlUnescape(absl::string_view text);

}  // namespace dcasgd::storage

#endif  // DCASGD_STORAGE_S3_XML_H_
