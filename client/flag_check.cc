#include "client/flag_check.h"

#include <optional>
#include <string>

#include "absl/flags/reflection.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"

namespace segkv::client {
namespace {

bool IsUsageFlag(absl::string_view name) {
  for (absl::string_view f : {"help", "helpfull", "helpshort", "helppackage", "version",
                              "only_check_args", "helpon", "helpmatch"}) {
    if (name == f) return true;
  }
  return false;
}

}  // namespace

absl::Status CheckFlags(int argc, char** argv, absl::string_view own_flag) {
  const absl::CommandLineFlag* own = absl::FindCommandLineFlag(own_flag);
  const std::string own_file = own != nullptr ? own->Filename() : "";
  for (int i = 1; i < argc; ++i) {
    absl::string_view arg = argv[i];
    if (arg == "--") break;
    if (arg.size() < 2 || arg[0] != '-') continue;
    arg.remove_prefix(arg[1] == '-' ? 2 : 1);
    const size_t eq = arg.find('=');
    absl::string_view name = arg.substr(0, eq);
    std::optional<absl::string_view> value;
    if (eq != absl::string_view::npos) value = arg.substr(eq + 1);
    // Usage flags are not in the registry; absl handles them.
    if (IsUsageFlag(name)) continue;
    absl::CommandLineFlag* flag = absl::FindCommandLineFlag(name);
    if (flag == nullptr) {
      absl::CommandLineFlag* neg =
          absl::ConsumePrefix(&name, "no") ? absl::FindCommandLineFlag(name) : nullptr;
      if (neg != nullptr && neg->IsOfType<bool>() && !value.has_value()) continue;
      return absl::InvalidArgumentError(absl::StrCat("unknown flag: ", argv[i]));
    }
    if (flag->IsOfType<bool>() && !value.has_value()) continue;
    if (!value.has_value()) {
      if (i + 1 >= argc) {
        return absl::InvalidArgumentError(absl::StrCat("missing value for flag ", argv[i]));
      }
      value = argv[++i];
    }
    // Built-in flags (flagfile, ...) act when parsed: left to absl.
    if (flag->Filename() != own_file) continue;
    std::string error;
    if (!flag->ParseFrom(*value, &error)) {
      return absl::InvalidArgumentError(absl::StrCat("bad value for --", name, ": ", error));
    }
  }
  return absl::OkStatus();
}

}  // namespace segkv::client
