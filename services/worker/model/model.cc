#include "services/worker/model/model.h"

#include <iterator>
#include <utility>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/types/span.h"
#include "base/status_macros.h"
#include "services/worker/model/conv_net.h"
#include "services/worker/model/feed_forward.h"
#include "services/worker/model/torchscript_model.h"

namespace dcasgd::model {
namespace {

constexpr int kMaxHiddenSize = 65536;
constexpr int kMaxHiddenLayers = 64;
constexpr int kMaxChannels = 1024;
// "cnn" alone: small enough for thousands of single-threaded steps, and about
// 91% test accuracy on Fashion-MNIST with plain SGD (docs/benchmarks.md).
constexpr int kDefaultCnn[3] = {8, 16, 128};
constexpr absl::string_view kAcceptedForms =
    "expected \"softmax\", \"mlp:H1,H2,...\" with hidden sizes in [1, 65536], e.g. "
    "\"mlp:256,128\", or \"cnn\" (= \"cnn:8,16,128\") or \"cnn:C1,C2,H\" with channel counts "
    "C1, C2 in [1, 1024] and a dense width H in [1, 65536], or \"torchscript:PATH\" (a module "
    "saved with torch.jit.script(module).save(PATH))";

absl::Status BadName(absl::string_view name, absl::string_view why) {
  return absl::InvalidArgumentError(
      absl::StrCat("bad model '", name, "': ", why, "; ", kAcceptedForms));
}

// Parses one size strictly: decimal digits only, no signs or spaces.
absl::StatusOr<int> ParseSize(absl::string_view name, absl::string_view what,
                              absl::string_view piece, int max) {
  bool digits = !piece.empty() && piece.size() <= 6;
  for (char c : piece) digits = digits && absl::ascii_isdigit(static_cast<unsigned char>(c));
  int size = 0;
  if (!digits || !absl::SimpleAtoi(piece, &size) || size < 1 || size > max) {
    return BadName(name, absl::StrCat(what, " '", piece, "' is not an integer in [1, ", max, "]"));
  }
  return size;
}

// Parses "256,128".
absl::StatusOr<std::vector<int>> ParseHiddenSizes(absl::string_view name, absl::string_view sizes) {
  if (sizes.empty()) return BadName(name, "no hidden sizes");
  std::vector<int> hidden;
  for (absl::string_view piece : absl::StrSplit(sizes, ',')) {
    ASSIGN_OR_RETURN(int size, ParseSize(name, "hidden size", piece, kMaxHiddenSize));
    hidden.push_back(size);
  }
  if (hidden.size() > kMaxHiddenLayers) {
    return BadName(name, absl::StrCat("more than ", kMaxHiddenLayers, " hidden layers"));
  }
  return hidden;
}

// Parses "C1,C2,H" (exactly three sizes).
absl::StatusOr<std::vector<int>> ParseCnnSizes(absl::string_view name, absl::string_view sizes) {
  const std::vector<absl::string_view> pieces = absl::StrSplit(sizes, ',');
  if (pieces.size() != 3) {
    return BadName(name, "a cnn takes exactly three sizes: two channel counts and a dense width");
  }
  ASSIGN_OR_RETURN(const int conv1,
                   ParseSize(name, "conv1 channel count", pieces[0], kMaxChannels));
  ASSIGN_OR_RETURN(const int conv2,
                   ParseSize(name, "conv2 channel count", pieces[1], kMaxChannels));
  ASSIGN_OR_RETURN(const int dense, ParseSize(name, "dense width", pieces[2], kMaxHiddenSize));
  return std::vector<int>{conv1, conv2, dense};
}

}  // namespace

absl::StatusOr<std::unique_ptr<Model>> CreateModel(absl::string_view name, int input_dim,
                                                   int num_classes) {
  if (input_dim < 1 || num_classes < 2) {
    return absl::InvalidArgumentError(absl::StrCat("model '", name, "': input_dim (", input_dim,
                                                   ") must be >= 1 and num_classes (", num_classes,
                                                   ") >= 2"));
  }
  if (name == "softmax") {
    return std::unique_ptr<Model>(new SoftmaxRegression(input_dim, num_classes));
  }
  if (name == "mlp") return BadName(name, "an MLP needs its hidden sizes");
  if (absl::StartsWith(name, "mlp:")) {
    ASSIGN_OR_RETURN(std::vector<int> hidden,
                     ParseHiddenSizes(name, name.substr(absl::string_view("mlp:").size())));
    return std::unique_ptr<Model>(new Mlp(std::move(hidden), input_dim, num_classes));
  }
  if (name == "cnn" || absl::StartsWith(name, "cnn:")) {
    std::vector<int> sizes(std::begin(kDefaultCnn), std::end(kDefaultCnn));
    if (name != "cnn") {
      ASSIGN_OR_RETURN(sizes, ParseCnnSizes(name, name.substr(absl::string_view("cnn:").size())));
    }
    absl::StatusOr<int> side = ConvNet::ImageSide(input_dim);
    if (!side.ok()) return BadName(name, side.status().message());
    return std::unique_ptr<Model>(new ConvNet(sizes[0], sizes[1], sizes[2], *side, num_classes));
  }
  if (absl::StartsWith(name, kTorchScriptPrefix)) {
    const absl::string_view path = name.substr(kTorchScriptPrefix.size());
    if (path.empty()) return BadName(name, "no path after 'torchscript:'");
    return CreateTorchScriptModel(path, input_dim, num_classes);
  }
  return BadName(name, "unknown model");
}

absl::StatusOr<ParameterMap> InitializeParameters(const std::vector<TensorSpec>& specs) {
  ParameterMap params;
  for (const TensorSpec& given : specs) {
    RETURN_IF_ERROR(ValidateTensorSpec(given));
    const TensorSpec spec = ResolveDefaults(given);
    auto [it, inserted] = params.try_emplace(spec.name);
    if (!inserted) {
      return absl::InvalidArgumentError(
          absl::StrCat("tensor '", spec.name, "' is declared more than once"));
    }
    std::vector<float>& values = it->second;
    values.resize(spec.num_elements());
    for (uint64_t c = 0; c < spec.num_chunks(); ++c) {
      InitializeChunk(spec, c,
                      absl::MakeSpan(values.data() + spec.chunk_offset(c), spec.chunk_length(c)));
    }
  }
  return params;
}

}  // namespace dcasgd::model
