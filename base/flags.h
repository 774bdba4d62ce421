#ifndef DCASGD_BASE_FLAGS_H_
#define DCASGD_BASE_FLAGS_H_

#include <functional>
#include <initializer_list>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"

namespace dcasgd {

// Looks up an environment variable; nullopt when unset.
using EnvLookup = std::function<std::optional<std::string>(const std::string& name)>;
// The process environment (getenv).
EnvLookup ProcessEnv();

// The command-line flags of one program: every absl flag (ABSL_FLAG) defined
// in the program's options file, each of which may also be given as the
// environment variable DCASGD_<FLAG> (the command line wins), as Kubernetes
// manifests do. No list of names to keep in step: the set is every flag
// whose definition is in `defining_file`, which must be __FILE__ of the file
// holding the ABSL_FLAG definitions (the constructor is called from it).
//
// Accepted forms: --name=value, -name=value, --name value, --bool and
// --nobool. Not thread-safe (absl flags are process-wide): parse once, from
// one thread.
class FlagSet {
 public:
  // `program` names the binary in messages ("dcasgd-ps").
  FlagSet(std::string program, absl::string_view defining_file);
  // The flags defined in any of `defining_files` (a program's own options
  // file and a shared one, such as auth/server_flags.h's).
  FlagSet(std::string program, std::initializer_list<absl::string_view> defining_files);

  // Sets every flag of the set from `args` (without the program name), else
  // the environment, else its default, so that repeated parses do not see
  // each other's values. Returns the names given on the command line or in
  // the environment. INVALID_ARGUMENT naming the flag (or variable) for an
  // unknown flag, a positional argument, a missing or unparsable value.
  absl::StatusOr<std::set<std::string>> Parse(const std::vector<std::string>& args,
                                              const EnvLookup& env) const;

  // `summary`, then every flag with its variable, help text and default.
  std::string Usage(absl::string_view summary) const;

  // The variable that sets `flag`: DCASGD_ and the name in capitals.
  static std::string EnvName(absl::string_view flag);

 private:
  bool Has(absl::string_view name) const;

  const std::string program_;
  std::vector<std::string> names_;  // sorted
};

// The value of a duration flag given in seconds: positive (or >= 0 with
// `zero_ok`), at most 1e9; INVALID_ARGUMENT "--flag=value: must be ..."
// (followed by `zero_means`, e.g. "; 0 turns it off") otherwise.
absl::StatusOr<absl::Duration> SecondsFlag(absl::string_view flag, double seconds, bool zero_ok,
                                           absl::string_view zero_means = "");

// True when `args` asks for help (--help, -help or --helpfull).
bool WantsHelp(const std::vector<std::string>& args);

}  // namespace dcasgd

#endif  // DCASGD_BASE_FLAGS_H_
