#include "storage/s3_xml.h"

#include <optional>

#include "absl/status/status.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"

namespace dcasgd::storage {
namespace {

// Finds the next element named `name` at or after `*pos` and returns its
// inner text (raw, not unescaped); advances `*pos` past the closing tag.
// Matches "<name>" and "<name attr...>", not "<nameSuffix>". A self-closing
// "<name/>" yields "".
std::optional<absl::string_view> NextElement(absl::string_view xml, absl::string_view name,
                                             size_t* pos) {
  const std::string open = absl::StrCat("<", name);
  const std::string close = absl::StrCat("</", name, ">");
  size_t at = *pos;
  while (true) {
    at = xml.find(open, at);
    if (at == absl::string_view::npos) return std::nullopt;
    const size_t after = at + open.size();
    if (after >= xml.size()) return std::nullopt;
    const char next = xml[after];
    if (next != '>' && next != ' ' && next != '/' && next != '\t' && next != '\n' && next != '\r') {
      at = after;  // a longer element name
      continue;
    }
    const size_t tag_end = xml.find('>', after);
    if (tag_end == absl::string_view::npos) return std::nullopt;
    if (xml[tag_end - 1] == '/') {
      *pos = tag_end + 1;
      return absl::string_view();
    }
    const size_t content_begin = tag_end + 1;
    const size_t content_end = xml.find(close, content_begin);
    if (content_end == absl::string_view::npos) return std::nullopt;
    *pos = content_end + close.size();
    return xml.substr(content_begin, content_end - content_begin);
  }
}

std::optional<absl::string_view> FirstElement(absl::string_view xml, absl::string_view name) {
  size_t pos = 0;
  return NextElement(xml, name, &pos);
}

void AppendUtf8(uint32_t cp, std::string* out) {
  if (cp < 0x80) {
    out->push_back(static_cast<char>(cp));
  } else if (cp < 0x800) {
    out->push_back(static_cast<char>(0xC0 | (cp >> 6)));
    out->push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else if (cp < 0x10000) {
    out->push_back(static_cast<char>(0xE0 | (cp >> 12)));
    out->push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out->push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else {
    out->push_back(static_cast<char>(0xF0 | (cp >> 18)));
    out->push_back(static_cast<char>(0x80 | ((cp >> 12) & 0x3F)));
    out->push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out->push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  }
}

}  // namespace

std::string XmlUnescape(absl::string_view text) {
  std::string out;
  out.reserve(text.size());
  size_t i = 0;
  while (i < text.size()) {
    if (text[i] != '&') {
      out.push_back(text[i++]);
      continue;
    }
    const size_t semi = text.find(';', i);
    if (semi == absl::string_view::npos || semi - i > 12) {
      out.push_back(text[i++]);
      continue;
    }
    const absl::string_view ref = text.substr(i + 1, semi - i - 1);
    bool decoded = true;
    if (ref == "amp") {
      out.push_back('&');
    } else if (ref == "lt") {
      out.push_back('<');
    } else if (ref == "gt") {
      out.push_back('>');
    } else if (ref == "quot") {
      out.push_back('"');
    } else if (ref == "apos") {
      out.push_back('\'');
    } else if (ref.size() > 1 && ref[0] == '#') {
      uint32_t cp = 0;
      bool ok;
      if (ref[1] == 'x' || ref[1] == 'X') {
        ok = ref.size() > 2 && absl::SimpleHexAtoi(ref.substr(2), &cp);
      } else {
        ok = absl::SimpleAtoi(ref.substr(1), &cp);
      }
      decoded = ok && cp <= 0x10FFFF;
      if (decoded) AppendUtf8(cp, &out);
    } else {
      decoded = false;
    }
    if (decoded) {
      i = semi + 1;
    } else {
      out.push_back(text[i++]);
    }
  }
  return out;
}

absl::StatusOr<S3ListPage> ParseListObjectsV2(absl::string_view xml) {
  const std::optional<absl::string_view> body = FirstElement(xml, "ListBucketResult");
  if (!body.has_value()) {
    return absl::InvalidArgumentError("ListObjectsV2 response has no <ListBucketResult>");
  }
  S3ListPage page;
  size_t pos = 0;
  while (std::optional<absl::string_view> contents = NextElement(*body, "Contents", &pos)) {
    const std::optional<absl::string_view> key = FirstElement(*contents, "Key");
    if (!key.has_value()) {
      return absl::InvalidArgumentError("ListObjectsV2 <Contents> without <Key>");
    }
    S3ListedObject object;
    object.key = XmlUnescape(*key);
    if (std::optional<absl::string_view> size = FirstElement(*contents, "Size")) {
      if (!absl::SimpleAtoi(absl::StripAsciiWhitespace(*size), &object.size)) {
        return absl::InvalidArgumentError(
            absl::StrCat("ListObjectsV2 <Size> is not a number: ", *size));
      }
    }
    page.objects.push_back(std::move(object));
  }
  if (std::optional<absl::string_view> truncated = FirstElement(*body, "IsTruncated")) {
    page.is_truncated = absl::StripAsciiWhitespace(*truncated) == "true";
  }
  if (std::optional<absl::string_view> token = FirstElement(*body, "NextContinuationToken")) {
    page.next_continuation_token = XmlUnescape(absl::StripAsciiWhitespace(*token));
  }
  if (page.is_truncated && page.next_continuation_token.empty()) {
    return absl::InvalidArgumentError(
        "ListObjectsV2 page is truncated but has no NextContinuationToken");
  }
  return page;
}

S3ErrorBody ParseS3Error(absl::string_view xml) {
  S3ErrorBody error;
  const absl::string_view body = FirstElement(xml, "Error").value_or(xml);
  if (std::optional<absl::string_view> code = FirstElement(body, "Code")) {
    error.code = XmlUnescape(absl::StripAsciiWhitespace(*code));
  }
  if (std::optional<absl::string_view> message = FirstElement(body, "Message")) {
    error.message = XmlUnescape(absl::StripAsciiWhitespace(*message));
  }
  return error;
}

}  // namespace dcasgd::storage
