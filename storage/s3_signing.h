#ifndef DCASGD_STORAGE_S3_SIGNING_H_
#define DCASGD_STORAGE_S3_SIGNING_H_

// Pure helpers for building requests that libcurl's CURLOPT_AWS_SIGV4 signs
// correctly. libcurl 7.88 signs the URL exactly as given: it neither
// percent-encodes the path nor sorts/encodes the query, and it does not add
// x-amz-content-sha256. These functions produce the canonical forms SigV4
// expects so that what curl signs is what the server recomputes.
// All functions are pure and thread-safe.

#include <string>
#include <utility>
#include <vector>

#include "absl/strings/string_view.h"

namespace dcasgd::storage {

// RFC 3986 percent-encoding as SigV4 specifies it: the unreserved characters
// A-Z a-z 0-9 '-' '.' '_' '~' stay, every other byte becomes %XY with
// uppercase hex. When `keep_slash` is true, '/' also stays (object keys in
// paths); query names and values are encoded with keep_slash = false.
std::string UriEncode(absl::string_view text, bool keep_slash);

// The SigV4 canonical query string: names and values UriEncode'd, pairs
// sorted by encoded name then encoded value, joined as "n1=v1&n2=v2". A pair
// with an empty value renders as "name=". Returns "" for no parameters.
std::string CanonicalQueryString(std::vector<std::pair<std::string, std::string>> params);

// Lowercase hex SHA-256 of `bytes` (the x-amz-content-sha256 header value).
std::string Sha256Hex(absl::string_view bytes);

// The SHA-256 of the empty body, sent with GET/HEAD requests.
inline constexpr absl::string_view kEmptyPayloadSha256 =
    "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

// The path-style URL "ENDPOINT/BUCKET/ENCODED_KEY[?QUERY]". `endpoint` is
// "scheme://host[:port]" (a trailing '/' is ignored); `key` may be empty (a
// bucket-level request) and is encoded keeping '/'; `canonical_query` is the
// output of CanonicalQueryString.
std::string PathStyleUrl(absl::string_view endpoint, absl::string_view bucket,
                         absl::string_view key, absl::string_view canonical_query);

// The libcurl CURLOPT_AWS_SIGV4 parameter for S3 in `region`:
// "aws:amz:REGION:s3".
std::string CurlSigV4Param(absl::string_view region);

}  // namespace dcasgd::storage

#endif  // DCASGD_STORAGE_S3_SIGNING_H_
