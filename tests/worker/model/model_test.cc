#include "services/worker/model/model.h"

#include <cmath>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "services/worker/model/torchscript_model.h"
#include "tests/worker/model/model_testing.h"

namespace dcasgd::model {
namespace {

using ::testing::HasSubstr;

std::unique_ptr<Model> MustCreate(const std::string& name, int input_dim = kFashionMnistFeatures,
                                  int classes = kFashionMnistClasses) {
  auto model = CreateModel(name, input_dim, classes);
  EXPECT_TRUE(model.ok()) << model.status();
  return model.ok() ? std::move(*model) : nullptr;
}

ParameterMap MustInitialize(const Model& model, uint64_t seed) {
  auto params = InitializeParameters(model.ParameterSpecs(seed));
  EXPECT_TRUE(params.ok()) << params.status();
  return params.ok() ? std::move(*params) : ParameterMap();
}

struct NameAndShape {
  std::string name;
  std::vector<int64_t> shape;
  bool operator==(const NameAndShape& o) const { return name == o.name && shape == o.shape; }
};

std::vector<NameAndShape> NamesAndShapes(const std::vector<TensorSpec>& specs) {
  std::vector<NameAndShape> out;
  for (const TensorSpec& spec : specs) out.push_back({spec.name, spec.shape});
  return out;
}

double Mean(const std::vector<float>& v) {
  double sum = 0;
  for (float x : v) sum += x;
  return sum / v.size();
}

double Stddev(const std::vector<float>& v) {
  const double mean = Mean(v);
  double sum = 0;
  for (float x : v) sum += (x - mean) * (x - mean);
  return std::sqrt(sum / v.size());
}

TEST(CreateModel, MakesSoftmaxRegression) {
  auto model = MustCreate("softmax");
  ASSERT_NE(model, nullptr);
  EXPECT_EQ(model->name(), "softmax");
  EXPECT_EQ(model->input_dim(), 784);
  EXPECT_EQ(model->num_classes(), 10);
  EXPECT_EQ(NamesAndShapes(model->ParameterSpecs(0)),
            (std::vector<NameAndShape>{{"softmax/w", {784, 10}}, {"softmax/b", {10}}}));
}

TEST(CreateModel, MakesMlpWithHiddenSizes) {
  auto model = MustCreate("mlp:256,128");
  ASSERT_NE(model, nullptr);
  EXPECT_EQ(model->name(), "mlp:256,128");
  EXPECT_EQ(NamesAndShapes(model->ParameterSpecs(0)),
            (std::vector<NameAndShape>{{"mlp/fc0/w", {784, 256}},
                                       {"mlp/fc0/b", {256}},
                                       {"mlp/fc1/w", {256, 128}},
                                       {"mlp/fc1/b", {128}},
                                       {"mlp/fc2/w", {128, 10}},
                                       {"mlp/fc2/b", {10}}}));
}

TEST(CreateModel, UsesGivenDimensions) {
  auto model = MustCreate("mlp:7", 5, 3);
  ASSERT_NE(model, nullptr);
  EXPECT_EQ(model->input_dim(), 5);
  EXPECT_EQ(model->num_classes(), 3);
  EXPECT_EQ(
      NamesAndShapes(model->ParameterSpecs(0)),
      (std::vector<NameAndShape>{
          {"mlp/fc0/w", {5, 7}}, {"mlp/fc0/b", {7}}, {"mlp/fc1/w", {7, 3}}, {"mlp/fc1/b", {3}}}));
}

TEST(CreateModel, RejectsMalformedNames) {
  for (const std::string name :
       {"", "Softmax", "softmax:10", " softmax", "mlp", "mlp:", "mlp:0", "mlp:-1", "mlp:+5",
        "mlp: 256", "mlp:256,", "mlp:,256", "mlp:256,,128", "mlp:abc", "mlp:1.5", "mlp:65537",
        "mlp:99999999999", "mlp;256"}) {
    SCOPED_TRACE(name);
    auto model = CreateModel(name);
    ASSERT_FALSE(model.ok());
    EXPECT_EQ(model.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(model.status().message(), HasSubstr("'" + name + "'"));
    EXPECT_THAT(model.status().message(), HasSubstr("mlp:256,128"));
  }
}

// "torchscript:PATH" reaches the TorchScript factory: in a LibTorch build a
// missing file is NOT_FOUND (the module tests are torchscript_model_test.cc);
// in a program without LibTorch (dcasgd-worker, this test) the user is told
// which program has it.
TEST(CreateModel, TorchScriptNamesReachTheTorchScriptFactory) {
  auto model = CreateModel("torchscript:/nonexistent/module.pt");
  ASSERT_FALSE(model.ok());
  if (TorchScriptAvailable()) {
    EXPECT_EQ(model.status().code(), absl::StatusCode::kNotFound);
    EXPECT_THAT(model.status().message(), HasSubstr("no file '/nonexistent/module.pt'"));
  } else {
    EXPECT_EQ(model.status().code(), absl::StatusCode::kFailedPrecondition);
    EXPECT_THAT(model.status().message(),
                HasSubstr("built without LibTorch: run dcasgd-worker-torch"));
  }
  model = CreateModel("torchscript:");
  EXPECT_EQ(model.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(model.status().message(), HasSubstr("torchscript:PATH"));
}

TEST(CreateModel, AcceptsLargestHiddenSize) {
  auto model = CreateModel("mlp:65536", 1, 2);
  EXPECT_TRUE(model.ok()) << model.status();
}

TEST(CreateModel, RejectsBadDimensions) {
  EXPECT_EQ(CreateModel("softmax", 0, 10).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(CreateModel("softmax", 784, 1).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(CreateModel("mlp:4", -3, 10).status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(ParameterSpecs, AreValidAndDeterministicForASeed) {
  for (const std::string name : {"softmax", "mlp:256,128"}) {
    SCOPED_TRACE(name);
    auto model = MustCreate(name);
    ASSERT_NE(model, nullptr);
    const std::vector<TensorSpec> specs = model->ParameterSpecs(42);
    for (const TensorSpec& spec : specs) EXPECT_TRUE(ValidateTensorSpec(spec).ok()) << spec.name;
    EXPECT_EQ(specs, model->ParameterSpecs(42));
    EXPECT_NE(specs, model->ParameterSpecs(43));
    EXPECT_EQ(MustInitialize(*model, 42), MustInitialize(*model, 42));
  }
}

TEST(ParameterSpecs, DifferentSeedsGiveDifferentWeights) {
  auto model = MustCreate("mlp:64,32");
  ASSERT_NE(model, nullptr);
  const ParameterMap a = MustInitialize(*model, 1);
  const ParameterMap b = MustInitialize(*model, 2);
  for (const std::string tensor : {"mlp/fc0/w", "mlp/fc1/w", "mlp/fc2/w"}) {
    EXPECT_NE(a.at(tensor), b.at(tensor)) << tensor;
  }
  // Within one seed the tensors get independent streams, not the same one.
  EXPECT_NE(std::vector<float>(a.at("mlp/fc1/w").begin(), a.at("mlp/fc1/w").begin() + 100),
            std::vector<float>(a.at("mlp/fc0/w").begin(), a.at("mlp/fc0/w").begin() + 100));
}

TEST(ParameterSpecs, UseHeForHiddenLayersSmallOutputAndZeroBiases) {
  auto model = MustCreate("mlp:256,128");
  ASSERT_NE(model, nullptr);
  const ParameterMap params = MustInitialize(*model, 7);
  EXPECT_NEAR(Stddev(params.at("mlp/fc0/w")), std::sqrt(2.0 / 784), 0.02 * std::sqrt(2.0 / 784));
  EXPECT_NEAR(Stddev(params.at("mlp/fc1/w")), std::sqrt(2.0 / 256), 0.02 * std::sqrt(2.0 / 256));
  EXPECT_NEAR(Stddev(params.at("mlp/fc2/w")), 0.01, 0.001);
  EXPECT_NEAR(Mean(params.at("mlp/fc0/w")), 0.0, 0.001);
  for (const std::string bias : {"mlp/fc0/b", "mlp/fc1/b", "mlp/fc2/b"}) {
    EXPECT_EQ(params.at(bias), std::vector<float>(params.at(bias).size(), 0.0f)) << bias;
  }
}

TEST(InitializeParameters, AssemblesServerChunksInOrder) {
  auto model = MustCreate("softmax");
  ASSERT_NE(model, nullptr);
  std::vector<TensorSpec> specs = model->ParameterSpecs(5);
  specs[0].chunk_elements = 1000;  // 7840 elements: 8 chunks, the last short
  auto params = InitializeParameters(specs);
  ASSERT_TRUE(params.ok()) << params.status();
  std::vector<float> expected;
  for (uint64_t c = 0; c < specs[0].num_chunks(); ++c) {
    std::vector<float> chunk(specs[0].chunk_length(c));
    InitializeChunk(specs[0], c, absl::MakeSpan(chunk));
    expected.insert(expected.end(), chunk.begin(), chunk.end());
  }
  EXPECT_EQ(params->at("softmax/w"), expected);
  EXPECT_EQ(params->at("softmax/b"), std::vector<float>(10, 0.0f));
}

TEST(InitializeParameters, DefaultChunkSizeMatchesResolvedSpec) {
  auto model = MustCreate("mlp:100");
  ASSERT_NE(model, nullptr);
  std::vector<TensorSpec> specs = model->ParameterSpecs(9);
  ASSERT_EQ(specs[0].chunk_elements, 0u);
  std::vector<TensorSpec> resolved;
  for (const TensorSpec& spec : specs) resolved.push_back(ResolveDefaults(spec));
  auto a = InitializeParameters(specs);
  auto b = InitializeParameters(resolved);
  ASSERT_TRUE(a.ok() && b.ok());
  EXPECT_EQ(*a, *b);
  // 78400 elements span two default chunks, seeded differently.
  const std::vector<float>& w = a->at("mlp/fc0/w");
  EXPECT_NE(std::vector<float>(w.begin(), w.begin() + 10),
            std::vector<float>(w.begin() + kDefaultChunkElements,
                               w.begin() + kDefaultChunkElements + 10));
}

TEST(InitializeParameters, RejectsInvalidAndDuplicateSpecs) {
  TensorSpec bad;
  bad.name = "x";
  bad.shape = {0};
  EXPECT_EQ(InitializeParameters({bad}).status().code(), absl::StatusCode::kInvalidArgument);
  TensorSpec good;
  good.name = "x";
  good.shape = {3};
  auto duplicate = InitializeParameters({good, good});
  EXPECT_EQ(duplicate.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(duplicate.status().message(), HasSubstr("'x'"));
}

class GradientInputs : public ::testing::Test {
 protected:
  void SetUp() override {
    model_ = MustCreate("mlp:6", 4, 3);
    ASSERT_NE(model_, nullptr);
    params_ = MustInitialize(*model_, 1);
    data_ = testing::RandomDataset(5, 4, 3, 2);
    gradients_["sentinel"] = {1.0f};
  }

  void ExpectRejected(const ParameterMap& params, const std::vector<float>& features,
                      const std::vector<int32_t>& labels, const std::string& needle) {
    auto loss = model_->Gradient(params, features, labels, &gradients_);
    ASSERT_FALSE(loss.ok());
    EXPECT_EQ(loss.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(loss.status().message(), HasSubstr(needle));
    // Nothing written on failure.
    EXPECT_EQ(gradients_, (ParameterMap{{"sentinel", {1.0f}}}));
    auto eval = model_->Evaluate(params, features, labels);
    ASSERT_FALSE(eval.ok());
    EXPECT_EQ(eval.status().code(), absl::StatusCode::kInvalidArgument);
  }

  std::unique_ptr<Model> model_;
  ParameterMap params_;
  testing::Dataset data_;
  ParameterMap gradients_;
};

TEST_F(GradientInputs, RejectsMissingTensor) {
  params_.erase("mlp/fc1/b");
  ExpectRejected(params_, data_.features, data_.labels, "'mlp/fc1/b' is missing");
}

TEST_F(GradientInputs, RejectsWrongTensorLength) {
  params_["mlp/fc0/w"].pop_back();
  ExpectRejected(params_, data_.features, data_.labels, "expected 24");
}

TEST_F(GradientInputs, RejectsEmptyBatch) { ExpectRejected(params_, {}, {}, "empty batch"); }

TEST_F(GradientInputs, RejectsFeatureCountMismatch) {
  data_.features.pop_back();
  ExpectRejected(params_, data_.features, data_.labels, "expected 5 x 4 = 20");
}

TEST_F(GradientInputs, RejectsLabelsOutOfRange) {
  data_.labels[2] = 3;
  ExpectRejected(params_, data_.features, data_.labels, "label 3 of example 2");
  data_.labels[2] = -1;
  ExpectRejected(params_, data_.features, data_.labels, "label -1 of example 2");
}

TEST_F(GradientInputs, ReplacesGradientMapAndIgnoresExtraParameters) {
  params_["unrelated"] = {1, 2, 3};
  gradients_["mlp/fc0/w"] = {9.0f};  // wrong size: resized
  auto loss = model_->Gradient(params_, data_.features, data_.labels, &gradients_);
  ASSERT_TRUE(loss.ok()) << loss.status();
  EXPECT_TRUE(std::isfinite(*loss));
  ASSERT_EQ(gradients_.size(), 4u);
  for (const TensorSpec& spec : model_->ParameterSpecs(1)) {
    ASSERT_TRUE(gradients_.contains(spec.name)) << spec.name;
    EXPECT_EQ(gradients_.at(spec.name).size(), spec.num_elements()) << spec.name;
  }
}

TEST(Gradient, SingleExampleLossIsMinusLogProbabilityOfLabel) {
  // Softmax with W = 0 and b = (0, ln 2, ln 3): probabilities 1/6, 2/6, 3/6.
  auto model = MustCreate("softmax", 2, 3);
  ASSERT_NE(model, nullptr);
  ParameterMap params = {{"softmax/w", std::vector<float>(6, 0.0f)},
                         {"softmax/b", {0.0f, std::log(2.0f), std::log(3.0f)}}};
  ParameterMap gradients;
  auto loss = model->Gradient(params, {0.5f, -2.0f}, {1}, &gradients);
  ASSERT_TRUE(loss.ok()) << loss.status();
  EXPECT_NEAR(*loss, -std::log(2.0 / 6), 1e-6);
  // d loss / d b = softmax - one_hot(1); d loss / d W = x (softmax - one_hot).
  const std::vector<double> delta = {1.0 / 6, 2.0 / 6 - 1, 3.0 / 6};
  for (int j = 0; j < 3; ++j) {
    EXPECT_NEAR(gradients["softmax/b"][j], delta[j], 1e-6);
    EXPECT_NEAR(gradients["softmax/w"][j], 0.5 * delta[j], 1e-6);
    EXPECT_NEAR(gradients["softmax/w"][3 + j], -2.0 * delta[j], 1e-6);
  }
}

TEST(Gradient, HugeLogitsStayFinite) {
  // Naive exp() would overflow at logits of 1e4; the row-max shift does not.
  auto model = MustCreate("softmax", 1, 2);
  ASSERT_NE(model, nullptr);
  ParameterMap params = {{"softmax/w", {1e4f, -1e4f}}, {"softmax/b", {0.0f, 0.0f}}};
  ParameterMap gradients;
  auto right = model->Gradient(params, {1.0f}, {0}, &gradients);
  ASSERT_TRUE(right.ok());
  EXPECT_NEAR(*right, 0.0, 1e-6);
  auto wrong = model->Gradient(params, {1.0f}, {1}, &gradients);
  ASSERT_TRUE(wrong.ok());
  EXPECT_NEAR(*wrong, 2e4, 1.0);
  for (float g : gradients["softmax/w"]) EXPECT_TRUE(std::isfinite(g));
}

TEST(Evaluate, FreshSoftmaxIsNearChanceOnRandomLabels) {
  auto model = MustCreate("softmax");
  ASSERT_NE(model, nullptr);
  const ParameterMap params = MustInitialize(*model, 3);
  const testing::Dataset data = testing::RandomDataset(3000, 784, 10, 4);
  auto eval = model->Evaluate(params, data.features, data.labels);
  ASSERT_TRUE(eval.ok()) << eval.status();
  EXPECT_EQ(eval->examples, 3000);
  // Output weights of stddev 0.01: logits near 0, loss near log(10).
  EXPECT_NEAR(eval->mean_loss, std::log(10.0), 0.05);
  // Chance is 0.1 (binomial stddev ~0.0055 for 3000 examples).
  EXPECT_GT(eval->accuracy, 0.06);
  EXPECT_LT(eval->accuracy, 0.14);
}

TEST(Evaluate, DoesNotDependOnBatchSizeAndMatchesGradientLoss) {
  auto model = MustCreate("mlp:20,10", 12, 4);
  ASSERT_NE(model, nullptr);
  const ParameterMap params = MustInitialize(*model, 5);
  const testing::Dataset data = testing::RandomDataset(103, 12, 4, 6);
  ParameterMap gradients;
  auto loss = model->Gradient(params, data.features, data.labels, &gradients);
  ASSERT_TRUE(loss.ok());
  auto whole = model->Evaluate(params, data.features, data.labels, 103);
  ASSERT_TRUE(whole.ok());
  EXPECT_NEAR(whole->mean_loss, *loss, 1e-5);
  for (int batch : {1, 7, 64, 1000}) {
    SCOPED_TRACE(batch);
    auto eval = model->Evaluate(params, data.features, data.labels, batch);
    ASSERT_TRUE(eval.ok()) << eval.status();
    EXPECT_EQ(eval->examples, 103);
    EXPECT_NEAR(eval->mean_loss, whole->mean_loss, 1e-5);
    EXPECT_NEAR(eval->accuracy, whole->accuracy, 1.5 / 103);
  }
}

TEST(Evaluate, RejectsNonPositiveBatchSize) {
  auto model = MustCreate("softmax", 2, 2);
  ASSERT_NE(model, nullptr);
  const ParameterMap params = MustInitialize(*model, 5);
  for (int batch : {0, -1}) {
    EXPECT_EQ(model->Evaluate(params, {1, 2}, {0}, batch).status().code(),
              absl::StatusCode::kInvalidArgument);
  }
}

}  // namespace
}  // namespace dcasgd::model
