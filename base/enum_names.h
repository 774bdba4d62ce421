#ifndef DCASGD_BASE_ENUM_NAMES_H_
#define DCASGD_BASE_ENUM_NAMES_H_

#include <cstddef>

#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"

namespace dcasgd {

// One row of an enum's name table: the names a flag or a message may use for
// `value`. The first row of a value holds its canonical name; later rows of
// the same value are accepted aliases.
template <typename Enum>
struct EnumName {
  Enum value;
  const char* name;
};

// The canonical name of `value` in `table`, or "?" when the table lacks it
// (a programmer error: every value has a row).
template <typename Enum, size_t N>
const char* NameOf(const EnumName<Enum> (&table)[N], Enum value) {
  for (const EnumName<Enum>& row : table) {
    if (row.value == value) return row.name;
  }
  return "?";
}

// The value `name` stands for in `table`. INVALID_ARGUMENT naming `what`
// (e.g. "update rule") and listing the canonical names otherwise.
template <typename Enum, size_t N>
absl::StatusOr<Enum> ParseEnum(absl::string_view what, const EnumName<Enum> (&table)[N],
                               absl::string_view name) {
  for (const EnumName<Enum>& row : table) {
    if (name == row.name) return row.value;
  }
  std::string names;
  for (size_t i = 0; i < N; ++i) {
    if (NameOf(table, table[i].value) != table[i].name) continue;  // an alias
    absl::StrAppend(&names, names.empty() ? "" : " | ", table[i].name);
  }
  return absl::InvalidArgumentError(
      absl::StrCat("unknown ", what, " '", name, "': use one of ", names));
}

}  // namespace dcasgd

#endif  // DCASGD_BASE_ENUM_NAMES_H_
