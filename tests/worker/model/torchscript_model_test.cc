// The TorchScript model against the Eigen MLP, thread-safety, and the errors
// a user gets for a wrong module. The modules come from
// examples/torchscript/save_modules.py, run by the ctest fixture
// worker_model_torchscript_modules into DCASGD_TORCHSCRIPT_DIR (built only
// with -DDCASGD_WITH_TORCH=ON).

#include "services/worker/model/torchscript_model.h"

#include <cmath>
#include <filesystem>
#include <fstream>
#include <memory>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "services/worker/model/model.h"
#include "tests/worker/model/model_testing.h"

namespace dcasgd::model {
namespace {

using ::testing::HasSubstr;

std::string ModulePath(const std::string& file) {
  return absl::StrCat(DCASGD_TORCHSCRIPT_DIR, "/", file);
}

std::unique_ptr<Model> MustCreate(const std::string& name) {
  auto model = CreateModel(name);
  EXPECT_TRUE(model.ok()) << model.status();
  return model.ok() ? std::move(*model) : nullptr;
}

// The torch name of the Eigen MLP's tensor "mlp/fc<l>/{w,b}" and whether it
// is a weight matrix (torch keeps [out, in], Eigen [in, out]).
struct TensorPair {
  std::string eigen;
  std::string torch;
  int rows;  // of the Eigen matrix (fan_in); 0 for a bias
  int cols;
};

const std::vector<TensorPair>& MlpPairs() {
  static const auto* pairs = new std::vector<TensorPair>{
      {"mlp/fc0/w", "fc0.weight", 784, 256}, {"mlp/fc0/b", "fc0.bias", 0, 256},
      {"mlp/fc1/w", "fc1.weight", 256, 128}, {"mlp/fc1/b", "fc1.bias", 0, 128},
      {"mlp/fc2/w", "fc2.weight", 128, 10},  {"mlp/fc2/b", "fc2.bias", 0, 10},
  };
  return *pairs;
}

// A rows x cols row-major matrix transposed.
std::vector<float> Transpose(const std::vector<float>& m, int rows, int cols) {
  std::vector<float> t(m.size());
  for (int r = 0; r < rows; ++r) {
    for (int c = 0; c < cols; ++c) t[static_cast<size_t>(c) * rows + r] = m[r * cols + c];
  }
  return t;
}

// The Eigen MLP's weights under the torch module's names and layout.
ParameterMap ToTorch(const ParameterMap& eigen) {
  ParameterMap torch;
  for (const TensorPair& p : MlpPairs()) {
    const std::vector<float>& v = eigen.at(p.eigen);
    torch[p.torch] = p.rows == 0 ? v : Transpose(v, p.rows, p.cols);
  }
  return torch;
}

// Same-shaped tensors agree within float tolerance: |a - b| <= 1e-5 +
// 1e-4 * |b| element by element.
void ExpectClose(const std::vector<float>& a, const std::vector<float>& b,
                 const std::string& what) {
  ASSERT_EQ(a.size(), b.size()) << what;
  int mismatches = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    if (std::abs(a[i] - b[i]) > 1e-5f + 1e-4f * std::abs(b[i]) && ++mismatches <= 3) {
      ADD_FAILURE() << what << "[" << i << "]: " << a[i] << " vs " << b[i];
    }
  }
  EXPECT_EQ(mismatches, 0) << what;
}

TEST(TorchScriptModel, ScriptedMlpGivesTheEigenMlpsLossAndGradients) {
  auto eigen = MustCreate("mlp:256,128");
  auto torch = MustCreate("torchscript:" + ModulePath("mlp.pt"));
  ASSERT_NE(eigen, nullptr);
  ASSERT_NE(torch, nullptr);
  // The Eigen MLP's seeded weights, given to both models.
  auto eigen_params = InitializeParameters(eigen->ParameterSpecs(7));
  ASSERT_TRUE(eigen_params.ok()) << eigen_params.status();
  const ParameterMap torch_params = ToTorch(*eigen_params);
  const testing::Dataset batch = testing::RandomDataset(64, 784, 10, 11);

  ParameterMap eigen_grads, torch_grads;
  auto eigen_loss = eigen->Gradient(*eigen_params, batch.features, batch.labels, &eigen_grads);
  auto torch_loss = torch->Gradient(torch_params, batch.features, batch.labels, &torch_grads);
  ASSERT_TRUE(eigen_loss.ok()) << eigen_loss.status();
  ASSERT_TRUE(torch_loss.ok()) << torch_loss.status();
  EXPECT_NEAR(*torch_loss, *eigen_loss, 1e-5 * std::abs(*eigen_loss));
  ASSERT_EQ(torch_grads.size(), MlpPairs().size());
  for (const TensorPair& p : MlpPairs()) {
    const std::vector<float>& g = torch_grads.at(p.torch);
    ExpectClose(p.rows == 0 ? g : Transpose(g, p.cols, p.rows), eigen_grads.at(p.eigen), p.torch);
  }
  // Evaluation too: the same loss and the same arg-max.
  const testing::Dataset test = testing::RandomDataset(300, 784, 10, 12);
  auto eigen_eval = eigen->Evaluate(*eigen_params, test.features, test.labels, 128);
  auto torch_eval = torch->Evaluate(torch_params, test.features, test.labels, 128);
  ASSERT_TRUE(eigen_eval.ok()) << eigen_eval.status();
  ASSERT_TRUE(torch_eval.ok()) << torch_eval.status();
  EXPECT_NEAR(torch_eval->mean_loss, eigen_eval->mean_loss, 1e-5 * eigen_eval->mean_loss);
  EXPECT_EQ(torch_eval->accuracy, eigen_eval->accuracy);
  EXPECT_EQ(torch_eval->examples, 300);
}

TEST(TorchScriptModel, TracedModuleGivesTheScriptedOnesGradients) {
  auto scripted = MustCreate("torchscript:" + ModulePath("mlp.pt"));
  auto traced = MustCreate("torchscript:" + ModulePath("mlp_traced.pt"));
  ASSERT_NE(scripted, nullptr);
  ASSERT_NE(traced, nullptr);
  auto params = InitializeParameters(scripted->ParameterSpecs(0));
  ASSERT_TRUE(params.ok()) << params.status();
  const testing::Dataset batch = testing::RandomDataset(16, 784, 10, 3);
  ParameterMap a, b;
  auto loss_a = scripted->Gradient(*params, batch.features, batch.labels, &a);
  auto loss_b = traced->Gradient(*params, batch.features, batch.labels, &b);
  ASSERT_TRUE(loss_a.ok() && loss_b.ok()) << loss_a.status() << loss_b.status();
  EXPECT_FLOAT_EQ(*loss_a, *loss_b);
  for (const auto& [name, grad] : a) ExpectClose(b.at(name), grad, name);
}

// One line of mlp.txt: name, shape, sum and first element of a saved tensor.
struct Saved {
  std::string name;
  std::vector<int64_t> shape;
  double sum;
  double first;
};

std::vector<Saved> ReadSavedSummary() {
  std::vector<Saved> saved;
  std::ifstream in(ModulePath("mlp.txt"));
  std::string line;
  while (std::getline(in, line)) {
    const std::vector<std::string> f = absl::StrSplit(line, ' ');
    if (f.size() != 4) continue;
    Saved s{f[0], {}, 0, 0};
    for (absl::string_view d : absl::StrSplit(f[1], ',')) {
      int64_t dim = 0;
      EXPECT_TRUE(absl::SimpleAtoi(d, &dim)) << line;
      s.shape.push_back(dim);
    }
    EXPECT_TRUE(absl::SimpleAtod(f[2], &s.sum) && absl::SimpleAtod(f[3], &s.first)) << line;
    saved.push_back(s);
  }
  return saved;
}

TEST(TorchScriptModel, DeclaresTheNamedParametersWithTheSavedValues) {
  auto model = MustCreate("torchscript:" + ModulePath("mlp.pt"));
  ASSERT_NE(model, nullptr);
  EXPECT_EQ(model->name(), "torchscript:" + ModulePath("mlp.pt"));
  EXPECT_EQ(model->input_dim(), 784);
  EXPECT_EQ(model->num_classes(), 10);
  const std::vector<TensorSpec> specs = model->ParameterSpecs(1);
  const std::vector<Saved> saved = ReadSavedSummary();
  ASSERT_EQ(saved.size(), 6u);
  ASSERT_EQ(specs.size(), saved.size());
  for (size_t i = 0; i < specs.size(); ++i) {
    EXPECT_EQ(specs[i].name, saved[i].name);
    EXPECT_EQ(specs[i].shape, saved[i].shape);
    EXPECT_EQ(specs[i].init.kind, Initializer::Kind::kValues);
    ASSERT_EQ(specs[i].init.values.size(), specs[i].num_elements());
    double sum = 0;
    for (float v : specs[i].init.values) sum += v;
    EXPECT_NEAR(sum, saved[i].sum, 1e-4) << specs[i].name;
    EXPECT_FLOAT_EQ(specs[i].init.values[0], static_cast<float>(saved[i].first));
  }
  // The seed does not matter: the values are the module's.
  EXPECT_EQ(model->ParameterSpecs(2), specs);
}

TEST(TorchScriptModel, ThreadsGetTheSameResultsAsOneThread) {
  auto model = MustCreate("torchscript:" + ModulePath("cnn.pt"));
  ASSERT_NE(model, nullptr);
  constexpr int kThreads = 4;
  // Every thread its own weights and batch; one thread first, then all at once.
  std::vector<ParameterMap> params(kThreads);
  std::vector<testing::Dataset> batches;
  std::vector<ParameterMap> expected(kThreads);
  std::vector<float> expected_loss(kThreads);
  for (int t = 0; t < kThreads; ++t) {
    auto init = InitializeParameters(model->ParameterSpecs(0));
    ASSERT_TRUE(init.ok()) << init.status();
    params[t] = *init;
    for (auto& [name, values] : params[t]) {
      for (float& v : values) v *= 1.0f + 0.1f * static_cast<float>(t);
    }
    batches.push_back(testing::RandomDataset(8, 784, 10, 100 + t));
    auto loss = model->Gradient(params[t], batches[t].features, batches[t].labels, &expected[t]);
    ASSERT_TRUE(loss.ok()) << loss.status();
    expected_loss[t] = *loss;
  }
  std::vector<ParameterMap> got(kThreads);
  std::vector<absl::StatusOr<float>> loss(kThreads, 0.0f);
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      for (int round = 0; round < 5 && loss[t].ok(); ++round) {
        loss[t] = model->Gradient(params[t], batches[t].features, batches[t].labels, &got[t]);
      }
    });
  }
  for (std::thread& thread : threads) thread.join();
  for (int t = 0; t < kThreads; ++t) {
    ASSERT_TRUE(loss[t].ok()) << loss[t].status();
    EXPECT_EQ(*loss[t], expected_loss[t]) << "thread " << t;
    EXPECT_EQ(got[t], expected[t]) << "thread " << t;
  }
  // Different weights give different results (the comparison above can fail).
  EXPECT_NE(expected_loss[0], expected_loss[1]);
}

TEST(TorchScriptModel, BadWeightsAndBatchesLeaveTheGradientsUntouched) {
  auto model = MustCreate("torchscript:" + ModulePath("mlp.pt"));
  ASSERT_NE(model, nullptr);
  auto params = InitializeParameters(model->ParameterSpecs(0));
  ASSERT_TRUE(params.ok());
  const testing::Dataset batch = testing::RandomDataset(4, 784, 10, 1);
  const ParameterMap before = {{"keep", {1, 2, 3}}};
  ParameterMap grads = before;

  ParameterMap missing = *params;
  missing.erase("fc1.bias");
  auto r = model->Gradient(missing, batch.features, batch.labels, &grads);
  EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(r.status().message(), HasSubstr("'fc1.bias' is missing"));

  ParameterMap short_tensor = *params;
  short_tensor["fc0.weight"].pop_back();
  r = model->Gradient(short_tensor, batch.features, batch.labels, &grads);
  EXPECT_THAT(r.status().message(), HasSubstr("'fc0.weight' has 200703 elements"));

  std::vector<int32_t> bad_labels = batch.labels;
  bad_labels[2] = 10;
  r = model->Gradient(*params, batch.features, bad_labels, &grads);
  EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument);
  r = model->Gradient(*params, absl::MakeConstSpan(batch.features).subspan(1), batch.labels,
                      &grads);
  EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(grads, before);
  auto e = model->Evaluate(*params, batch.features, batch.labels, 0);
  EXPECT_EQ(e.status().code(), absl::StatusCode::kInvalidArgument);
}

absl::Status CreateError(const std::string& name) {
  auto model = CreateModel(name);
  return model.ok() ? absl::OkStatus() : model.status();
}

TEST(TorchScriptModel, MissingFileIsNotFound) {
  const std::string path = ModulePath("no_such_module.pt");
  const absl::Status status = CreateError("torchscript:" + path);
  EXPECT_EQ(status.code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(status.message(), HasSubstr(absl::StrCat("no file '", path, "'")));
  EXPECT_THAT(CreateError("torchscript:").message(), HasSubstr("no path after 'torchscript:'"));
}

TEST(TorchScriptModel, NotAModuleIsRefused) {
  const std::string garbage = ModulePath("garbage.pt");
  std::ofstream(garbage) << "not a zip archive";
  absl::Status status = CreateError("torchscript:" + garbage);
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(status.message(), HasSubstr("is not a TorchScript module"));
  status = CreateError(std::string("torchscript:") + DCASGD_TORCHSCRIPT_DIR);
  EXPECT_THAT(status.message(), HasSubstr("is not a regular file"));
}

TEST(TorchScriptModel, ModuleWithoutParametersIsRefused) {
  const absl::Status status = CreateError("torchscript:" + ModulePath("broken_no_parameters.pt"));
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(status.message(), HasSubstr("the module has no parameters"));
}

TEST(TorchScriptModel, WrongShapesAndTypesSayWhatTheModuleMustAccept) {
  constexpr absl::string_view kContract =
      "forward must take one float32 tensor of N x 784 features and return one float32 tensor "
      "of N x 10 logits";
  absl::Status status = CreateError("torchscript:" + ModulePath("broken_output_width.pt"));
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(status.message(), HasSubstr("tensor of shape [2, 5]"));
  EXPECT_THAT(status.message(), HasSubstr(kContract));

  status = CreateError("torchscript:" + ModulePath("broken_input_width.pt"));
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(status.message(), HasSubstr("a trial forward pass on 2 x 784 zeros"));
  EXPECT_THAT(status.message(), HasSubstr(kContract));

  status = CreateError("torchscript:" + ModulePath("broken_tuple_output.pt"));
  EXPECT_THAT(status.message(), HasSubstr("forward returned a Tuple, not a tensor"));

  status = CreateError("torchscript:" + ModulePath("broken_float64.pt"));
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(status.message(), HasSubstr("is Double; every parameter must be float32"));
}

}  // namespace
}  // namespace dcasgd::model
