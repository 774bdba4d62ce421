#include "base/flags.h"

#include <algorithm>
#include <cstdlib>
#include <map>
#include <utility>

#include "absl/flags/commandlineflag.h"
#include "absl/flags/reflection.h"
#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/strip.h"

namespace dcasgd {
namespace {

// absl reports a flag's file without leading "./" or "/"; __FILE__ may have
// them.
absl::string_view WithoutLeadingDots(absl::string_view path) {
  while (absl::ConsumePrefix(&path, "./") || absl::ConsumePrefix(&path, "/")) {
  }
  return path;
}

bool IsBool(absl::string_view name) {
  const absl::CommandLineFlag* flag = absl::FindCommandLineFlag(name);
  return flag != nullptr && flag->IsOfType<bool>();
}

}  // namespace

EnvLookup ProcessEnv() {
  return [](const std::string& name) -> std::optional<std::string> {
    const char* value = std::getenv(name.c_str());
    if (value == nullptr) return std::nullopt;
    return std::string(value);
  };
}

FlagSet::FlagSet(std::string program, absl::string_view defining_file)
    : FlagSet(std::move(program), std::initializer_list<absl::string_view>{defining_file}) {}

FlagSet::FlagSet(std::string program, std::initializer_list<absl::string_view> defining_files)
    : program_(std::move(program)) {
  for (const auto& [name, flag] : absl::GetAllFlags()) {
    const std::string filename = flag->Filename();  // by value
    for (absl::string_view file : defining_files) {
      if (WithoutLeadingDots(filename) == WithoutLeadingDots(file)) names_.emplace_back(name);
    }
  }
  std::sort(names_.begin(), names_.end());
}

absl::StatusOr<absl::Duration> SecondsFlag(absl::string_view flag, double seconds, bool zero_ok,
                                           absl::string_view zero_means) {
  const bool in_range = zero_ok ? seconds >= 0 : seconds > 0;
  if (!in_range || seconds > 1e9) {
    return absl::InvalidArgumentError(absl::StrCat("--", flag, "=", seconds, ": must be ",
                                                   zero_ok ? ">= 0" : "positive", zero_means));
  }
  return absl::Seconds(seconds);
}

std::string FlagSet::EnvName(absl::string_view flag) {
  return absl::StrCat("DCASGD_", absl::AsciiStrToUpper(flag));
}

bool FlagSet::Has(absl::string_view name) const {
  return std::binary_search(names_.begin(), names_.end(), name);
}

absl::StatusOr<std::set<std::string>> FlagSet::Parse(const std::vector<std::string>& args,
                                                     const EnvLookup& env) const {
  // The command line as name -> value (the last occurrence wins).
  std::map<std::string, std::string> cmdline;
  for (size_t i = 0; i < args.size(); ++i) {
    absl::string_view arg = args[i];
    if (!absl::StartsWith(arg, "-") || arg == "-" || arg == "--") {
      return absl::InvalidArgumentError(
          absl::StrCat("unexpected argument '", arg, "': ", program_, " takes only --flags"));
    }
    arg.remove_prefix(absl::StartsWith(arg, "--") ? 2 : 1);
    const size_t eq = arg.find('=');
    const std::string name(arg.substr(0, eq));
    if (!Has(name)) {
      // --nofoo for a boolean --foo.
      if (eq == absl::string_view::npos && absl::StartsWith(name, "no") && Has(name.substr(2)) &&
          IsBool(name.substr(2))) {
        cmdline[name.substr(2)] = "false";
        continue;
      }
      return absl::InvalidArgumentError(absl::StrCat("unknown flag --", name, " (see --help)"));
    }
    if (eq != absl::string_view::npos) {
      cmdline[name] = std::string(arg.substr(eq + 1));
    } else if (IsBool(name)) {
      cmdline[name] = "true";
    } else if (i + 1 < args.size()) {
      cmdline[name] = args[++i];
    } else {
      return absl::InvalidArgumentError(absl::StrCat("flag --", name, " needs a value"));
    }
  }

  std::set<std::string> given;
  for (const std::string& name : names_) {
    absl::CommandLineFlag* flag = absl::FindCommandLineFlag(name);
    std::string value = flag->DefaultValue();
    std::string source = absl::StrCat("--", name);
    if (auto it = cmdline.find(name); it != cmdline.end()) {
      value = it->second;
      given.insert(name);
    } else if (std::optional<std::string> from_env = env(EnvName(name))) {
      value = *std::move(from_env);
      source = absl::StrCat("environment variable ", EnvName(name));
      given.insert(name);
    }
    std::string error;
    if (!flag->ParseFrom(value, &error)) {
      return absl::InvalidArgumentError(absl::StrCat(source, "='", value, "': ", error));
    }
  }
  return given;
}

std::string FlagSet::Usage(absl::string_view summary) const {
  std::string usage = absl::StrCat(
      summary,
      "\nEvery --flag may also be set by the environment variable DCASGD_<FLAG>; the flag "
      "wins.\n\n");
  for (const std::string& name : names_) {
    const absl::CommandLineFlag* flag = absl::FindCommandLineFlag(name);
    absl::StrAppendFormat(&usage, "  --%s (%s)\n      %s; default: '%s'\n", name, EnvName(name),
                          flag->Help(), flag->DefaultValue());
  }
  return usage;
}

bool WantsHelp(const std::vector<std::string>& args) {
  for (const std::string& arg : args) {
    if (arg == "--help" || arg == "-help" || arg == "--helpfull") return true;
  }
  return false;
}

}  // namespace dcasgd
