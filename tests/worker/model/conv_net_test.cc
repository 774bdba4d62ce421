// The convolutional model ("cnn"): finite-difference checks of its gradients
// against an independent double-precision reference written with plain loops
// from the layout documented in conv_net.h, its tensors and initialisers, its
// input validation, and that batching (Evaluate's batch size, the internal
// passes, threads) does not change its results.

#include "services/worker/model/conv_net.h"

#include <algorithm>
#include <cmath>
#include <memory>
#include <random>
#include <string>
#include <thread>
#include <tuple>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "services/worker/model/model.h"
#include "tests/worker/model/model_testing.h"

namespace dcasgd::model {
namespace {

using testing::DoubleMap;
using ::testing::HasSubstr;
using testing::RandomParameters;

// ---- Reference: direct convolution, ReLU then pooling, in double ----

struct ReferenceShape {
  int side;  // image side
  int channels1;
  int channels2;
  int hidden;
  int classes;
};

// A channels-last image: value(y, x, c) = data[(y * side + x) * channels + c].
struct Image {
  int side;
  int channels;
  std::vector<double> data;
  double at(int y, int x, int c) const { return data[(size_t(y) * side + x) * channels + c]; }
};

// 5x5 convolution, zero padding 2, weights w[ky][kx][ci][co], then ReLU.
Image ConvRelu(const Image& in, const std::vector<double>& w, const std::vector<double>& b,
               int out_channels) {
  Image out{in.side, out_channels, std::vector<double>(size_t(in.side) * in.side * out_channels)};
  for (int y = 0; y < in.side; ++y) {
    for (int x = 0; x < in.side; ++x) {
      for (int co = 0; co < out_channels; ++co) {
        double z = b[co];
        for (int ky = 0; ky < 5; ++ky) {
          for (int kx = 0; kx < 5; ++kx) {
            const int iy = y + ky - 2, ix = x + kx - 2;
            if (iy < 0 || iy >= in.side || ix < 0 || ix >= in.side) continue;
            for (int ci = 0; ci < in.channels; ++ci) {
              z += in.at(iy, ix, ci) *
                   w[((size_t(ky) * 5 + kx) * in.channels + ci) * out_channels + co];
            }
          }
        }
        out.data[(size_t(y) * in.side + x) * out_channels + co] = std::max(z, 0.0);
      }
    }
  }
  return out;
}

// 2x2 max pooling, stride 2, odd sides floored.
Image MaxPool(const Image& in) {
  const int side = in.side / 2;
  Image out{side, in.channels, std::vector<double>(size_t(side) * side * in.channels)};
  for (int y = 0; y < side; ++y) {
    for (int x = 0; x < side; ++x) {
      for (int c = 0; c < in.channels; ++c) {
        out.data[(size_t(y) * side + x) * in.channels + c] =
            std::max({in.at(2 * y, 2 * x, c), in.at(2 * y, 2 * x + 1, c),
                      in.at(2 * y + 1, 2 * x, c), in.at(2 * y + 1, 2 * x + 1, c)});
      }
    }
  }
  return out;
}

// y = x W + b for W [in, out] row-major.
std::vector<double> Dense(const std::vector<double>& x, const std::vector<double>& w,
                          const std::vector<double>& b) {
  std::vector<double> y(b);
  for (size_t i = 0; i < x.size(); ++i) {
    for (size_t j = 0; j < y.size(); ++j) y[j] += x[i] * w[i * y.size() + j];
  }
  return y;
}

double ReferenceLoss(const ReferenceShape& shape, const DoubleMap& p,
                     const testing::Dataset& data) {
  const size_t n = data.labels.size();
  const size_t dim = size_t(shape.side) * shape.side;
  double total = 0;
  for (size_t e = 0; e < n; ++e) {
    Image x{shape.side, 1,
            std::vector<double>(data.features.begin() + e * dim,
                                data.features.begin() + (e + 1) * dim)};
    const Image pool1 =
        MaxPool(ConvRelu(x, p.at("cnn/conv1/w"), p.at("cnn/conv1/b"), shape.channels1));
    const Image pool2 =
        MaxPool(ConvRelu(pool1, p.at("cnn/conv2/w"), p.at("cnn/conv2/b"), shape.channels2));
    std::vector<double> hidden = Dense(pool2.data, p.at("cnn/fc1/w"), p.at("cnn/fc1/b"));
    for (double& v : hidden) v = std::max(v, 0.0);
    const std::vector<double> logits = Dense(hidden, p.at("cnn/fc2/w"), p.at("cnn/fc2/b"));
    const double max = *std::max_element(logits.begin(), logits.end());
    double sum = 0;
    for (double v : logits) sum += std::exp(v - max);
    total += max + std::log(sum) - logits[data.labels[e]];
  }
  return total / static_cast<double>(n);
}

std::unique_ptr<Model> MustCreate(const std::string& name, int input_dim = kFashionMnistFeatures,
                                  int classes = kFashionMnistClasses) {
  auto model = CreateModel(name, input_dim, classes);
  EXPECT_TRUE(model.ok()) << model.status();
  return model.ok() ? std::move(*model) : nullptr;
}

// (model name, image side, num_classes, batch size)
using GradientCase = std::tuple<std::string, int, int, int>;

class ConvNetGradientCheck : public ::testing::TestWithParam<GradientCase> {};

TEST_P(ConvNetGradientCheck, MatchesCentralDifferencesOfDoubleReference) {
  const auto& [name, side, classes, batch] = GetParam();
  std::unique_ptr<Model> model = MustCreate(name, side * side, classes);
  ASSERT_NE(model, nullptr);
  const std::vector<TensorSpec> specs = model->ParameterSpecs(1);
  ASSERT_EQ(specs.size(), 8u);
  const ReferenceShape shape{side, static_cast<int>(specs[0].shape[3]),
                             static_cast<int>(specs[2].shape[3]),
                             static_cast<int>(specs[4].shape[1]), classes};
  const ParameterMap params = RandomParameters(specs, 2);
  const testing::Dataset data = testing::RandomDataset(batch, side * side, classes, 3);

  ParameterMap gradients;
  auto loss = model->Gradient(params, data.features, data.labels, &gradients);
  ASSERT_TRUE(loss.ok()) << loss.status();

  const DoubleMap reference = testing::ToDouble(params);
  const double reference_loss = ReferenceLoss(shape, reference, data);
  EXPECT_NEAR(*loss, reference_loss, 1e-5 * std::max(1.0, reference_loss));

  // Every tensor; all elements of small ones, a seeded sample of big ones.
  // The step is small so that it rarely moves a value across a ReLU or
  // max-pooling kink (the reference is in double, so 1e-6 leaves ~10 digits).
  testing::ExpectGradientsMatchCentralDifferences(
      specs, gradients, reference,
      [&](const DoubleMap& p) { return ReferenceLoss(shape, p, data); },
      /*max_elements_per_tensor=*/120, /*epsilon=*/1e-6);
}

INSTANTIATE_TEST_SUITE_P(
    Shapes, ConvNetGradientCheck,
    ::testing::Values(GradientCase{"cnn:3,4,5", 8, 3, 3},   // even sides throughout
                      GradientCase{"cnn:3,4,5", 8, 3, 1},   // a single example
                      GradientCase{"cnn:2,3,4", 7, 4, 2},   // odd sides: 7 -> 3 -> 1
                      GradientCase{"cnn:1,1,1", 4, 2, 4},   // the smallest image, 1 x 1 after pool2
                      GradientCase{"cnn:2,3,6", 28, 10, 2}  // Fashion-MNIST's 28 x 28, 10 classes
                      ),
    [](const ::testing::TestParamInfo<GradientCase>& test) {
      std::string label = std::get<0>(test.param);
      for (char& c : label) {
        if (c == ':' || c == ',') c = '_';
      }
      return label + "_side" + std::to_string(std::get<1>(test.param)) + "_out" +
             std::to_string(std::get<2>(test.param)) + "_batch" +
             std::to_string(std::get<3>(test.param));
    });

// ---- Tensors and initialisers ----

struct NameAndShape {
  std::string name;
  std::vector<int64_t> shape;
  bool operator==(const NameAndShape& o) const { return name == o.name && shape == o.shape; }
  friend std::ostream& operator<<(std::ostream& os, const NameAndShape& s) {
    os << s.name << " " << ShapeString(s.shape);
    return os;
  }
};

std::vector<NameAndShape> NamesAndShapes(const std::vector<TensorSpec>& specs) {
  std::vector<NameAndShape> out;
  for (const TensorSpec& spec : specs) out.push_back({spec.name, spec.shape});
  return out;
}

double Stddev(const std::vector<float>& v) {
  double sum = 0, sum_sq = 0;
  for (float x : v) {
    sum += x;
    sum_sq += double(x) * x;
  }
  const double mean = sum / v.size();
  return std::sqrt(sum_sq / v.size() - mean * mean);
}

TEST(ConvNetModel, DefaultIsCnn8_16_128OnFashionMnist) {
  std::unique_ptr<Model> model = MustCreate("cnn");
  ASSERT_NE(model, nullptr);
  EXPECT_EQ(model->name(), "cnn:8,16,128");
  EXPECT_EQ(model->input_dim(), 784);
  EXPECT_EQ(model->num_classes(), 10);
  EXPECT_EQ(NamesAndShapes(model->ParameterSpecs(0)),
            (std::vector<NameAndShape>{{"cnn/conv1/w", {5, 5, 1, 8}},
                                       {"cnn/conv1/b", {8}},
                                       {"cnn/conv2/w", {5, 5, 8, 16}},
                                       {"cnn/conv2/b", {16}},
                                       {"cnn/fc1/w", {7 * 7 * 16, 128}},
                                       {"cnn/fc1/b", {128}},
                                       {"cnn/fc2/w", {128, 10}},
                                       {"cnn/fc2/b", {10}}}));
}

TEST(ConvNetModel, ParameterisedSizesAndOddImageSide) {
  // 9 x 9 images: pool1 4 x 4, pool2 2 x 2.
  std::unique_ptr<Model> model = MustCreate("cnn:4,6,20", 81, 3);
  ASSERT_NE(model, nullptr);
  EXPECT_EQ(model->name(), "cnn:4,6,20");
  EXPECT_EQ(model->input_dim(), 81);
  EXPECT_EQ(NamesAndShapes(model->ParameterSpecs(0)),
            (std::vector<NameAndShape>{{"cnn/conv1/w", {5, 5, 1, 4}},
                                       {"cnn/conv1/b", {4}},
                                       {"cnn/conv2/w", {5, 5, 4, 6}},
                                       {"cnn/conv2/b", {6}},
                                       {"cnn/fc1/w", {2 * 2 * 6, 20}},
                                       {"cnn/fc1/b", {20}},
                                       {"cnn/fc2/w", {20, 3}},
                                       {"cnn/fc2/b", {3}}}));
}

TEST(ConvNetModel, SpecsAreValidDeterministicAndSeeded) {
  std::unique_ptr<Model> model = MustCreate("cnn:8,16,32");
  ASSERT_NE(model, nullptr);
  const std::vector<TensorSpec> specs = model->ParameterSpecs(42);
  for (const TensorSpec& spec : specs) EXPECT_TRUE(ValidateTensorSpec(spec).ok()) << spec.name;
  EXPECT_EQ(specs, model->ParameterSpecs(42));
  EXPECT_NE(specs, model->ParameterSpecs(43));
  auto a = InitializeParameters(specs);
  auto b = InitializeParameters(model->ParameterSpecs(43));
  ASSERT_TRUE(a.ok() && b.ok());
  for (const std::string tensor : {"cnn/conv1/w", "cnn/conv2/w", "cnn/fc1/w", "cnn/fc2/w"}) {
    EXPECT_NE(a->at(tensor), b->at(tensor)) << tensor;
  }
  // Within one seed the tensors get independent streams.
  EXPECT_NE(std::vector<float>(a->at("cnn/conv1/w").begin(), a->at("cnn/conv1/w").begin() + 50),
            std::vector<float>(a->at("cnn/conv2/w").begin(), a->at("cnn/conv2/w").begin() + 50));
}

TEST(ConvNetModel, HeInitialisersSmallOutputAndZeroBiases) {
  std::unique_ptr<Model> model = MustCreate("cnn:32,64,128");
  ASSERT_NE(model, nullptr);
  auto params = InitializeParameters(model->ParameterSpecs(7));
  ASSERT_TRUE(params.ok()) << params.status();
  // He: stddev sqrt(2 / fan_in), a convolution's fan-in being 25 * C_in.
  // Relative tolerances ~5 standard errors of the sample stddev.
  EXPECT_NEAR(Stddev(params->at("cnn/conv1/w")), std::sqrt(2.0 / 25), 0.12 * std::sqrt(2.0 / 25));
  EXPECT_NEAR(Stddev(params->at("cnn/conv2/w")), std::sqrt(2.0 / 800), 0.02 * std::sqrt(2.0 / 800));
  EXPECT_NEAR(Stddev(params->at("cnn/fc1/w")), std::sqrt(2.0 / 3136), 0.02 * std::sqrt(2.0 / 3136));
  EXPECT_NEAR(Stddev(params->at("cnn/fc2/w")), 0.01, 0.002);
  for (const std::string bias : {"cnn/conv1/b", "cnn/conv2/b", "cnn/fc1/b", "cnn/fc2/b"}) {
    EXPECT_EQ(params->at(bias), std::vector<float>(params->at(bias).size(), 0.0f)) << bias;
  }
}

TEST(ConvNetModel, RejectsMalformedNames) {
  for (const std::string name :
       {"cnn:", "cnn:16", "cnn:16,32", "cnn:16,32,128,10", "cnn:0,32,128", "cnn:16,0,128",
        "cnn:16,32,0", "cnn:1025,32,128", "cnn:16,1025,128", "cnn:16,32,65537", "cnn:16,,128",
        "cnn:16,32,", "cnn: 16,32,128", "cnn:-16,32,128", "cnn:a,b,c", "CNN", "cnn;16,32,128",
        "cnn:16.5,32,128"}) {
    SCOPED_TRACE(name);
    auto model = CreateModel(name);
    ASSERT_FALSE(model.ok());
    EXPECT_EQ(model.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(model.status().message(), HasSubstr("'" + name + "'"));
    EXPECT_THAT(model.status().message(), HasSubstr("cnn:C1,C2,H"));
  }
}

TEST(ConvNetModel, AcceptsLargestSizes) {
  // Only constructed (the factory checks bounds; no tensors are allocated).
  EXPECT_TRUE(CreateModel("cnn:1024,1024,65536").ok());
}

TEST(ConvNetModel, RejectsInputsThatAreNotSquareImages) {
  for (int input_dim : {783, 785, 2, 9, 15, 1025 * 1025}) {
    SCOPED_TRACE(input_dim);
    auto model = CreateModel("cnn", input_dim, 10);
    ASSERT_FALSE(model.ok());
    EXPECT_EQ(model.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(model.status().message(), HasSubstr("square"));
  }
  EXPECT_TRUE(CreateModel("cnn", 16, 10).ok());           // 4 x 4: the smallest
  EXPECT_TRUE(CreateModel("cnn", 1024 * 1024, 10).ok());  // the largest
  EXPECT_EQ(CreateModel("cnn", 0, 10).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(CreateModel("cnn", -784, 10).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(CreateModel("cnn", 784, 1).status().code(), absl::StatusCode::kInvalidArgument);
}

// ---- Input validation ----

class ConvNetInputs : public ::testing::Test {
 protected:
  void SetUp() override {
    model_ = MustCreate("cnn:2,3,4", 64, 3);
    ASSERT_NE(model_, nullptr);
    auto params = InitializeParameters(model_->ParameterSpecs(1));
    ASSERT_TRUE(params.ok());
    params_ = std::move(*params);
    data_ = testing::RandomDataset(5, 64, 3, 2);
    gradients_["sentinel"] = {1.0f};
  }

  void ExpectRejected(const ParameterMap& params, const std::vector<float>& features,
                      const std::vector<int32_t>& labels, const std::string& needle) {
    auto loss = model_->Gradient(params, features, labels, &gradients_);
    ASSERT_FALSE(loss.ok());
    EXPECT_EQ(loss.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(loss.status().message(), HasSubstr(needle));
    EXPECT_THAT(loss.status().message(), HasSubstr("cnn:2,3,4"));
    EXPECT_EQ(gradients_, (ParameterMap{{"sentinel", {1.0f}}}));  // nothing written
    auto eval = model_->Evaluate(params, features, labels);
    ASSERT_FALSE(eval.ok());
    EXPECT_EQ(eval.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(eval.status().message(), HasSubstr(needle));
  }

  std::unique_ptr<Model> model_;
  ParameterMap params_;
  testing::Dataset data_;
  ParameterMap gradients_;
};

TEST_F(ConvNetInputs, RejectsMissingTensor) {
  params_.erase("cnn/conv2/b");
  ExpectRejected(params_, data_.features, data_.labels, "'cnn/conv2/b' is missing");
}

TEST_F(ConvNetInputs, RejectsWrongTensorLength) {
  params_["cnn/conv2/w"].push_back(0.0f);
  ExpectRejected(params_, data_.features, data_.labels, "expected 150");
  params_["cnn/conv2/w"].resize(150);
  params_["cnn/fc1/w"].pop_back();  // 2 x 2 x 3 = 12 inputs x 4
  ExpectRejected(params_, data_.features, data_.labels, "expected 48");
}

TEST_F(ConvNetInputs, RejectsEmptyBatch) { ExpectRejected(params_, {}, {}, "empty batch"); }

TEST_F(ConvNetInputs, RejectsFeatureCountMismatch) {
  data_.features.pop_back();
  ExpectRejected(params_, data_.features, data_.labels, "expected 5 x 64 = 320");
}

TEST_F(ConvNetInputs, RejectsLabelsOutOfRange) {
  data_.labels[4] = 3;
  ExpectRejected(params_, data_.features, data_.labels, "label 3 of example 4");
  data_.labels[4] = -1;
  ExpectRejected(params_, data_.features, data_.labels, "label -1 of example 4");
}

TEST_F(ConvNetInputs, RejectsNonPositiveEvaluationBatchSize) {
  for (int batch : {0, -5}) {
    auto eval = model_->Evaluate(params_, data_.features, data_.labels, batch);
    EXPECT_EQ(eval.status().code(), absl::StatusCode::kInvalidArgument);
  }
}

TEST_F(ConvNetInputs, ReplacesGradientMapAndIgnoresExtraParameters) {
  params_["mlp/fc0/w"] = {1, 2, 3};
  gradients_["cnn/conv1/w"] = {9.0f};  // wrong size: resized
  auto loss = model_->Gradient(params_, data_.features, data_.labels, &gradients_);
  ASSERT_TRUE(loss.ok()) << loss.status();
  EXPECT_TRUE(std::isfinite(*loss));
  ASSERT_EQ(gradients_.size(), 8u);
  for (const TensorSpec& spec : model_->ParameterSpecs(1)) {
    ASSERT_TRUE(gradients_.contains(spec.name)) << spec.name;
    EXPECT_EQ(gradients_.at(spec.name).size(), spec.num_elements()) << spec.name;
  }
}

// ---- Batching does not change results ----

TEST(ConvNetBatching, EvaluateDoesNotDependOnBatchSizeAndMatchesGradientLoss) {
  std::unique_ptr<Model> model = MustCreate("cnn:4,5,8", 100, 4);
  ASSERT_NE(model, nullptr);
  const ParameterMap params = RandomParameters(model->ParameterSpecs(1), 5);
  const testing::Dataset data = testing::RandomDataset(103, 100, 4, 6);
  ParameterMap gradients;
  auto loss = model->Gradient(params, data.features, data.labels, &gradients);
  ASSERT_TRUE(loss.ok()) << loss.status();
  auto whole = model->Evaluate(params, data.features, data.labels, 103);
  ASSERT_TRUE(whole.ok()) << whole.status();
  EXPECT_NEAR(whole->mean_loss, *loss, 1e-5);
  // Random weights give predictions that are neither all right nor all wrong.
  EXPECT_GT(whole->accuracy, 0.0);
  EXPECT_LT(whole->accuracy, 1.0);
  for (int batch : {1, 7, 64, 1000}) {
    SCOPED_TRACE(batch);
    auto eval = model->Evaluate(params, data.features, data.labels, batch);
    ASSERT_TRUE(eval.ok()) << eval.status();
    EXPECT_EQ(eval->examples, 103);
    EXPECT_NEAR(eval->mean_loss, whole->mean_loss, 1e-5);
    EXPECT_NEAR(eval->accuracy, whole->accuracy, 1.5 / 103);
  }
}

TEST(ConvNetBatching, GradientSumsItsPassesExactlyAsOnePass) {
  // The same network once with room for the whole batch in one pass and once
  // with a scratch bound that forces one example per pass.
  const ConvNet one_pass(3, 4, 6, 12, 5);
  const ConvNet many_passes(3, 4, 6, 12, 5, /*scratch_floats=*/1);
  ASSERT_GE(one_pass.examples_per_pass(), 9);
  ASSERT_EQ(many_passes.examples_per_pass(), 1);
  const ParameterMap params = RandomParameters(one_pass.ParameterSpecs(1), 7);
  const testing::Dataset data = testing::RandomDataset(9, 144, 5, 8);
  ParameterMap a, b;
  auto loss_a = one_pass.Gradient(params, data.features, data.labels, &a);
  auto loss_b = many_passes.Gradient(params, data.features, data.labels, &b);
  ASSERT_TRUE(loss_a.ok() && loss_b.ok());
  EXPECT_NEAR(*loss_a, *loss_b, 1e-6);
  ASSERT_EQ(a.size(), b.size());
  for (const auto& [name, grad] : a) {
    SCOPED_TRACE(name);
    ASSERT_EQ(grad.size(), b.at(name).size());
    for (size_t i = 0; i < grad.size(); ++i) {
      EXPECT_NEAR(grad[i], b.at(name)[i], 1e-6 + 1e-5 * std::abs(grad[i])) << "element " << i;
    }
  }
}

TEST(ConvNetBatching, SameResultsFromConcurrentThreads) {
  // Every thread has its own scratch: two threads computing different
  // batches at once get what one thread gets for each batch alone.
  std::unique_ptr<Model> model = MustCreate("cnn:4,8,16", 196, 10);
  ASSERT_NE(model, nullptr);
  const ParameterMap params = RandomParameters(model->ParameterSpecs(1), 9);
  const testing::Dataset first = testing::RandomDataset(32, 196, 10, 10);
  const testing::Dataset second = testing::RandomDataset(48, 196, 10, 11);
  ParameterMap expected_first, expected_second;
  ASSERT_TRUE(model->Gradient(params, first.features, first.labels, &expected_first).ok());
  ASSERT_TRUE(model->Gradient(params, second.features, second.labels, &expected_second).ok());

  constexpr int kRounds = 20;
  bool first_ok = true, second_ok = true;
  auto run = [&](const testing::Dataset& data, const ParameterMap& expected, bool* ok) {
    ParameterMap gradients;
    for (int r = 0; r < kRounds; ++r) {
      *ok = *ok && model->Gradient(params, data.features, data.labels, &gradients).ok() &&
            gradients == expected;
    }
  };
  std::thread t1(run, std::cref(first), std::cref(expected_first), &first_ok);
  std::thread t2(run, std::cref(second), std::cref(expected_second), &second_ok);
  t1.join();
  t2.join();
  EXPECT_TRUE(first_ok);
  EXPECT_TRUE(second_ok);
}

}  // namespace
}  // namespace dcasgd::model
