#include "storage/s3_store.h"

#include <curl/curl.h>

#include <algorithm>
#include <cstdlib>
#include <optional>
#include <utility>

#include "absl/base/call_once.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/strip.h"
#include "base/backoff.h"
#include "base/check.h"
#include "storage/s3_signing.h"
#include "storage/s3_xml.h"

namespace dcasgd::storage {

struct S3Store::Request {
  const char* method = "GET";  // "GET" or "PUT"
  std::string object_key;      // full key in the bucket; "" for bucket requests
  std::vector<std::pair<std::string, std::string>> query;
  absl::string_view body;  // PUT only
  std::optional<ByteRange> range;
  std::string object;  // for messages: Describe(...)
};

struct S3Store::Response {
  long http_status = 0;  // NOLINT(runtime/int): curl's type
  std::string body;
  std::string content_range;  // the Content-Range header value, if any
};

namespace {

absl::once_flag curl_init_once;

std::string GetEnv(const char* name) {
  const char* value = std::getenv(name);
  return value == nullptr ? std::string() : std::string(value);
}

std::string TrimSlashes(absl::string_view s) {
  while (absl::ConsumePrefix(&s, "/")) {
  }
  while (absl::ConsumeSuffix(&s, "/")) {
  }
  return std::string(s);
}

size_t AppendToString(char* data, size_t size, size_t nmemb, void* user) {
  static_cast<std::string*>(user)->append(data, size * nmemb);
  return size * nmemb;
}

// Keeps the Content-Range header (names are case-insensitive).
size_t CaptureContentRange(char* data, size_t size, size_t nmemb, void* user) {
  absl::string_view line(data, size * nmemb);
  constexpr absl::string_view kName = "content-range:";
  if (line.size() > kName.size() && absl::EqualsIgnoreCase(line.substr(0, kName.size()), kName)) {
    *static_cast<std::string*>(user) =
        std::string(absl::StripAsciiWhitespace(line.substr(kName.size())));
  }
  return size * nmemb;
}

// The first byte of a "bytes START-END/TOTAL" Content-Range, if parseable.
std::optional<uint64_t> ContentRangeStart(absl::string_view value) {
  if (!absl::ConsumePrefix(&value, "bytes ")) return std::nullopt;
  uint64_t start = 0;
  if (!absl::SimpleAtoi(value.substr(0, value.find('-')), &start)) return std::nullopt;
  return start;
}

// Transport failures worth another attempt: the server may be restarting,
// overloaded or briefly unreachable.
bool IsRetryableCurlError(CURLcode code) {
  switch (code) {
    case CURLE_COULDNT_RESOLVE_HOST:
    case CURLE_COULDNT_CONNECT:
    case CURLE_OPERATION_TIMEDOUT:
    case CURLE_SEND_ERROR:
    case CURLE_RECV_ERROR:
    case CURLE_GOT_NOTHING:
    case CURLE_PARTIAL_FILE:
    case CURLE_SSL_CONNECT_ERROR:
      return true;
    default:
      return false;
  }
}

bool IsRetryableHttpStatus(long status) {  // NOLINT(runtime/int)
  return status == 429 || (status >= 500 && status <= 599);
}

// Frees the header list on scope exit.
struct HeaderList {
  curl_slist* list = nullptr;
  ~HeaderList() { curl_slist_free_all(list); }
  void Add(const std::string& header) {
    curl_slist* next = curl_slist_append(list, header.c_str());
    DCASGD_CHECK(next != nullptr);  // allocation failure
    list = next;
  }
};

}  // namespace

absl::StatusOr<S3Config> S3ConfigFromEnv(absl::string_view bucket, absl::string_view prefix) {
  if (bucket.empty()) return absl::InvalidArgumentError("S3 bucket name is empty");
  S3Config config;
  config.bucket = std::string(bucket);
  config.prefix = TrimSlashes(prefix);
  config.access_key_id = GetEnv("AWS_ACCESS_KEY_ID");
  config.secret_access_key = GetEnv("AWS_SECRET_ACCESS_KEY");
  config.session_token = GetEnv("AWS_SESSION_TOKEN");
  if (std::string region = GetEnv("AWS_REGION"); !region.empty()) config.region = region;
  config.endpoint = GetEnv("AWS_ENDPOINT_URL_S3");
  if (config.endpoint.empty()) config.endpoint = GetEnv("AWS_ENDPOINT_URL");
  if (config.access_key_id.empty() || config.secret_access_key.empty()) {
    return absl::FailedPreconditionError(
        absl::StrCat("S3 credentials for bucket \"", bucket,
                     "\" are missing: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY"));
  }
  return config;
}

absl::StatusOr<std::unique_ptr<S3Store>> S3Store::Create(S3Config config) {
  if (config.bucket.empty()) return absl::InvalidArgumentError("S3 bucket name is empty");
  if (config.list_page_size < 1 || config.list_page_size > 1000) {
    return absl::InvalidArgumentError(
        absl::StrCat("S3 list page size must be in [1, 1000], got ", config.list_page_size));
  }
  if (config.max_attempts < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("S3 max attempts must be >= 1, got ", config.max_attempts));
  }
  if (config.region.empty()) return absl::InvalidArgumentError("S3 region is empty");
  config.prefix = TrimSlashes(config.prefix);
  absl::call_once(curl_init_once, [] { DCASGD_CHECK(curl_global_init(CURL_GLOBAL_DEFAULT) == 0); });
  return std::unique_ptr<S3Store>(new S3Store(std::move(config)));
}

S3Store::S3Store(S3Config config)
    : config_(std::move(config)),
      endpoint_([this] {
        absl::string_view endpoint = config_.endpoint;
        while (absl::ConsumeSuffix(&endpoint, "/")) {
        }
        if (endpoint.empty()) return absl::StrCat("https://s3.", config_.region, ".amazonaws.com");
        return std::string(endpoint);
      }()),
      sigv4_param_(CurlSigV4Param(config_.region)) {}

S3Store::~S3Store() {
  absl::MutexLock lock(&pool_mu_);
  for (void* handle : idle_handles_) curl_easy_cleanup(static_cast<CURL*>(handle));
}

std::string S3Store::ObjectKey(absl::string_view key) const {
  return config_.prefix.empty() ? std::string(key) : absl::StrCat(config_.prefix, "/", key);
}

std::string S3Store::Describe(absl::string_view key) const {
  return absl::StrCat("s3://", config_.bucket, "/", ObjectKey(key));
}

void* S3Store::AcquireHandle() {
  {
    absl::MutexLock lock(&pool_mu_);
    if (!idle_handles_.empty()) {
      void* handle = idle_handles_.back();
      idle_handles_.pop_back();
      return handle;
    }
  }
  CURL* handle = curl_easy_init();
  DCASGD_CHECK(handle != nullptr);  // allocation failure
  return handle;
}

void S3Store::ReleaseHandle(void* curl) {
  absl::MutexLock lock(&pool_mu_);
  idle_handles_.push_back(curl);
}

absl::StatusOr<S3Store::Response> S3Store::PerformOnce(const Request& request, void* curl) {
  CURL* c = static_cast<CURL*>(curl);
  curl_easy_reset(c);
  const std::string url = PathStyleUrl(endpoint_, config_.bucket, request.object_key,
                                       CanonicalQueryString(request.query));
  Response response;
  HeaderList headers;
  const bool is_put = absl::string_view(request.method) == "PUT";
  headers.Add(absl::StrCat("x-amz-content-sha256: ",
                           is_put ? Sha256Hex(request.body) : kEmptyPayloadSha256));
  if (!config_.session_token.empty()) {
    headers.Add(absl::StrCat("x-amz-security-token: ", config_.session_token));
  }
  std::string range;
  if (request.range.has_value()) {
    range =
        absl::StrCat(request.range->offset, "-", request.range->offset + request.range->length - 1);
  }
  if (is_put) {
    headers.Add("Content-Type: application/octet-stream");
    // No "Expect:" override here: libcurl 7.88 would sign the empty header it
    // then leaves out, and the server rejects the signature. Large bodies pay
    // one 100-continue round trip instead.
  }

  curl_easy_setopt(c, CURLOPT_URL, url.c_str());
  curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
  curl_easy_setopt(c, CURLOPT_AWS_SIGV4, sigv4_param_.c_str());
  curl_easy_setopt(c, CURLOPT_USERNAME, config_.access_key_id.c_str());
  curl_easy_setopt(c, CURLOPT_PASSWORD, config_.secret_access_key.c_str());
  curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT_MS,
                   static_cast<long>(absl::ToInt64Milliseconds(config_.connect_timeout)));
  curl_easy_setopt(c, CURLOPT_TIMEOUT_MS,
                   static_cast<long>(absl::ToInt64Milliseconds(config_.request_timeout)));
  curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, &AppendToString);
  curl_easy_setopt(c, CURLOPT_WRITEDATA, &response.body);
  curl_easy_setopt(c, CURLOPT_HEADERFUNCTION, &CaptureContentRange);
  curl_easy_setopt(c, CURLOPT_HEADERDATA, &response.content_range);
  curl_easy_setopt(c, CURLOPT_HTTPHEADER, headers.list);
  if (!range.empty()) curl_easy_setopt(c, CURLOPT_RANGE, range.c_str());
  if (is_put) {
    curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, "PUT");
    // An empty body must still be a valid pointer, or curl reads from stdin.
    curl_easy_setopt(c, CURLOPT_POSTFIELDS, request.body.empty() ? "" : request.body.data());
    curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE_LARGE, static_cast<curl_off_t>(request.body.size()));
  }

  const CURLcode code = curl_easy_perform(c);
  if (code != CURLE_OK) {
    const std::string message = absl::StrCat(request.method, " ", request.object, " (", url,
                                             "): ", curl_easy_strerror(code));
    return IsRetryableCurlError(code) ? absl::UnavailableError(message)
                                      : absl::InternalError(message);
  }
  curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &response.http_status);
  return response;
}

absl::StatusOr<S3Store::Response> S3Store::Perform(const Request& request) {
  Backoff backoff({config_.initial_backoff, config_.max_backoff, /*multiplier=*/2.0,
                   /*jitter=*/0.0});
  absl::Status last_error;
  for (int attempt = 1; attempt <= config_.max_attempts; ++attempt) {
    if (attempt > 1) {
      const absl::Duration delay = backoff.Next();
      if (config_.sleep) {
        config_.sleep(delay);
      } else {
        absl::SleepFor(delay);
      }
    }
    void* curl = AcquireHandle();
    absl::StatusOr<Response> response = PerformOnce(request, curl);
    ReleaseHandle(curl);
    if (!response.ok()) {
      if (!absl::IsUnavailable(response.status())) return response.status();
      last_error = response.status();
      continue;
    }
    if (!IsRetryableHttpStatus(response->http_status)) return response;
    last_error = HttpError(*response, request.object);
  }
  return absl::UnavailableError(absl::StrCat("gave up after ", config_.max_attempts,
                                             " attempts; last error: ", last_error.message()));
}

absl::Status S3Store::HttpError(const Response& response, absl::string_view object) const {
  const S3ErrorBody error = ParseS3Error(response.body);
  const long status = response.http_status;  // NOLINT(runtime/int)
  const std::string detail =
      absl::StrCat("HTTP ", status, error.code.empty() ? "" : absl::StrCat(" ", error.code),
                   error.message.empty() ? "" : absl::StrCat(": ", error.message));
  switch (status) {
    case 401:
    case 403:
      return absl::PermissionDeniedError(
          absl::StrFormat("access to S3 bucket \"%s\" denied (%s): %s; check AWS_ACCESS_KEY_ID, "
                          "AWS_SECRET_ACCESS_KEY, AWS_REGION and the endpoint",
                          config_.bucket, object, detail));
    case 404:
      if (error.code == "NoSuchBucket") {
        return absl::NotFoundError(absl::StrFormat("S3 bucket \"%s\" does not exist (%s): %s",
                                                   config_.bucket, object, detail));
      }
      return absl::NotFoundError(absl::StrFormat(
          "%s not found (bucket \"%s\", key \"%s\"): %s", object, config_.bucket,
          absl::StripPrefix(object, absl::StrCat("s3://", config_.bucket, "/")), detail));
    case 400:
      return absl::InvalidArgumentError(absl::StrCat(object, ": ", detail));
    case 409:
      return absl::FailedPreconditionError(absl::StrCat(object, ": ", detail));
    case 416:
      return absl::OutOfRangeError(absl::StrCat(object, ": ", detail));
    default:
      if (IsRetryableHttpStatus(status)) {
        return absl::UnavailableError(absl::StrCat(object, ": ", detail));
      }
      return absl::UnknownError(absl::StrCat(object, ": ", detail));
  }
}

absl::StatusOr<std::vector<BlobInfo>> S3Store::List(absl::string_view prefix) {
  const std::string root = config_.prefix.empty() ? "" : absl::StrCat(config_.prefix, "/");
  const std::string full_prefix = absl::StrCat(root, prefix);
  std::vector<BlobInfo> out;
  std::string token;
  do {
    Request request;
    request.object = absl::StrCat("s3://", config_.bucket, "/", full_prefix, "*");
    request.query = {{"list-type", "2"}, {"max-keys", absl::StrCat(config_.list_page_size)}};
    if (!full_prefix.empty()) request.query.emplace_back("prefix", full_prefix);
    if (!token.empty()) request.query.emplace_back("continuation-token", token);
    absl::StatusOr<Response> response = Perform(request);
    if (!response.ok()) return response.status();
    if (response->http_status != 200) return HttpError(*response, request.object);
    absl::StatusOr<S3ListPage> page = ParseListObjectsV2(response->body);
    if (!page.ok()) {
      return absl::InternalError(
          absl::StrCat("listing ", request.object, ": ", page.status().message()));
    }
    for (S3ListedObject& object : page->objects) {
      absl::string_view key = object.key;
      if (!absl::ConsumePrefix(&key, root)) continue;  // not ours
      out.push_back(BlobInfo{std::string(key), object.size});
    }
    if (page->is_truncated && page->next_continuation_token == token) {
      return absl::InternalError(
          absl::StrCat("listing ", request.object, ": server repeated continuation token"));
    }
    token = page->is_truncated ? page->next_continuation_token : "";
  } while (!token.empty());
  std::sort(out.begin(), out.end(),
            [](const BlobInfo& a, const BlobInfo& b) { return a.key < b.key; });
  return out;
}

absl::StatusOr<std::string> S3Store::Get(absl::string_view key, std::optional<ByteRange> range) {
  if (absl::Status valid = ValidateBlobKey(key); !valid.ok()) return valid;
  if (range.has_value() && range->length == 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("empty byte range requested from ", Describe(key)));
  }
  Request request;
  request.method = "GET";
  request.object_key = ObjectKey(key);
  request.object = Describe(key);
  request.range = range;
  absl::StatusOr<Response> response = Perform(request);
  if (!response.ok()) return response.status();
  if (response->http_status == 206) {
    // Some servers (s3rver for "bytes=0-0") send more than was asked; keep
    // the asked-for part when the reply says where it starts.
    if (range.has_value() && response->body.size() > range->length) {
      if (ContentRangeStart(response->content_range) != range->offset) {
        return absl::InternalError(absl::StrCat(
            request.object, ": asked for ", range->length, " bytes at ", range->offset, ", got ",
            response->body.size(), " bytes with Content-Range \"", response->content_range, "\""));
      }
      response->body.resize(range->length);
    }
    return std::move(response->body);
  }
  if (response->http_status != 200) return HttpError(*response, request.object);
  if (!range.has_value()) return std::move(response->body);
  // The server ignored the Range header and sent the whole object.
  if (range->offset >= response->body.size()) {
    return absl::OutOfRangeError(absl::StrCat("range starts at ", range->offset, " but ",
                                              request.object, " has ", response->body.size(),
                                              " bytes"));
  }
  return response->body.substr(range->offset, range->length);
}

absl::Status S3Store::Put(absl::string_view key, absl::string_view bytes) {
  if (absl::Status valid = ValidateBlobKey(key); !valid.ok()) return valid;
  Request request;
  request.method = "PUT";
  request.object_key = ObjectKey(key);
  request.object = Describe(key);
  request.body = bytes;
  absl::StatusOr<Response> response = Perform(request);
  if (!response.ok()) return response.status();
  if (response->http_status != 200 && response->http_status != 204) {
    return HttpError(*response, request.object);
  }
  return absl::OkStatus();
}

}  // namespace dcasgd::storage
