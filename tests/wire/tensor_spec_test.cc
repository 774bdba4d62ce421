#include "wire/tensor_spec.h"

#include <cstring>
#include <string>

#include "gtest/gtest.h"

namespace dcasgd {
namespace {

TEST(IsValidUtf8, AcceptsWellFormedText) {
  EXPECT_TRUE(IsValidUtf8(""));
  EXPECT_TRUE(IsValidUtf8("layer1/weights"));
  EXPECT_TRUE(IsValidUtf8("\xc3\xa9t\xc3\xa9"));         // été
  EXPECT_TRUE(IsValidUtf8("\xe6\x9d\x83\xe9\x87\x8d"));  // 权重
  EXPECT_TRUE(IsValidUtf8("\xf0\x9f\x98\x80"));          // U+1F600
}

TEST(IsValidUtf8, RejectsMalformedBytes) {
  EXPECT_FALSE(IsValidUtf8("\xff"));
  EXPECT_FALSE(IsValidUtf8("\x80"));              // lone continuation
  EXPECT_FALSE(IsValidUtf8("\xc3"));              // truncated
  EXPECT_FALSE(IsValidUtf8("\xc0\xaf"));          // overlong '/'
  EXPECT_FALSE(IsValidUtf8("\xed\xa0\x80"));      // surrogate U+D800
  EXPECT_FALSE(IsValidUtf8("\xf4\x90\x80\x80"));  // above U+10FFFF
  EXPECT_FALSE(IsValidUtf8(std::string("ok\xe2\x82", 4)));
}

TEST(ValidateName, RejectsEmptyAndBadUtf8) {
  EXPECT_TRUE(ValidateName("tensor name", "w").ok());
  EXPECT_EQ(ValidateName("tensor name", "").code(), absl::StatusCode::kInvalidArgument);
  const absl::Status bad = ValidateName("tensor name", "\xff");
  EXPECT_EQ(bad.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(bad.message().find("tensor name"), absl::string_view::npos);
}

TEST(TensorSpecProto, RoundTripsEveryInitializer) {
  std::vector<v1::Initializer> inits(5);
  inits[0].mutable_zeros();
  inits[1].mutable_constant()->set_value(0.5f);
  inits[2].mutable_uniform()->set_low(-1);
  inits[2].mutable_uniform()->set_high(2);
  inits[2].mutable_uniform()->set_seed(7);
  inits[3].mutable_normal()->set_mean(1);
  inits[3].mutable_normal()->set_stddev(0.1f);
  inits[3].mutable_normal()->set_seed(9);
  const float values[2] = {1.5f, -2.0f};
  inits[4].set_values(std::string(reinterpret_cast<const char*>(values), sizeof(values)));
  for (const v1::Initializer& init : inits) {
    v1::TensorSpec proto;
    proto.set_name("w");
    proto.add_shape(2);
    proto.set_chunk_elements(1);
    *proto.mutable_init() = init;
    absl::StatusOr<TensorSpec> spec = TensorSpecFromProto(proto);
    ASSERT_TRUE(spec.ok()) << spec.status();
    EXPECT_EQ(spec->name, "w");
    EXPECT_EQ(spec->shape, std::vector<int64_t>{2});
    EXPECT_EQ(spec->chunk_elements, 1u);
    v1::TensorSpec back;
    TensorSpecToProto(*spec, &back);
    EXPECT_EQ(back.SerializeAsString(), proto.SerializeAsString()) << back.DebugString();
  }
}

TEST(TensorSpecProto, ExplicitValuesBecomeFloats) {
  v1::TensorSpec proto;
  proto.set_name("b");
  proto.add_shape(2);
  const float values[2] = {1.5f, -2.0f};
  proto.mutable_init()->set_values(
      std::string(reinterpret_cast<const char*>(values), sizeof(values)));
  absl::StatusOr<TensorSpec> spec = TensorSpecFromProto(proto);
  ASSERT_TRUE(spec.ok()) << spec.status();
  EXPECT_EQ(spec->init.kind, Initializer::Kind::kValues);
  EXPECT_EQ(spec->init.values, (std::vector<float>{1.5f, -2.0f}));
}

TEST(TensorSpecProto, UnsetInitializerIsZeros) {
  v1::TensorSpec proto;
  proto.set_name("z");
  absl::StatusOr<TensorSpec> spec = TensorSpecFromProto(proto);
  ASSERT_TRUE(spec.ok()) << spec.status();
  EXPECT_EQ(spec->init.kind, Initializer::Kind::kZeros);
  EXPECT_TRUE(spec->shape.empty());
}

TEST(TensorSpecProto, RejectsBadNamesAndRaggedValues) {
  v1::TensorSpec proto;
  EXPECT_EQ(TensorSpecFromProto(proto).status().code(), absl::StatusCode::kInvalidArgument);
  proto.set_name("\xc3\x28");
  EXPECT_EQ(TensorSpecFromProto(proto).status().code(), absl::StatusCode::kInvalidArgument);
  proto.set_name("w");
  proto.mutable_init()->set_values("abcde");
  EXPECT_EQ(TensorSpecFromProto(proto).status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(SpecToProto, CarriesShapeChunkAndInitialiser) {
  TensorSpec spec;
  spec.name = "fc/w";
  spec.shape = {3, 2};
  spec.chunk_elements = 4;
  spec.init.kind = Initializer::Kind::kUniform;
  spec.init.a = -0.5f;
  spec.init.b = 0.5f;
  spec.init.seed = 42;
  v1::TensorSpec proto;
  TensorSpecToProto(spec, &proto);
  EXPECT_EQ(proto.name(), "fc/w");
  ASSERT_EQ(proto.shape_size(), 2);
  EXPECT_EQ(proto.shape(0), 3);
  EXPECT_EQ(proto.shape(1), 2);
  EXPECT_EQ(proto.chunk_elements(), 4u);
  ASSERT_TRUE(proto.init().has_uniform());
  EXPECT_EQ(proto.init().uniform().low(), -0.5f);
  EXPECT_EQ(proto.init().uniform().high(), 0.5f);
  EXPECT_EQ(proto.init().uniform().seed(), 42u);
}

TEST(SpecToProto, ExplicitValuesAreLittleEndianFloat32) {
  TensorSpec spec;
  spec.name = "b";
  spec.shape = {2};
  spec.init.kind = Initializer::Kind::kValues;
  spec.init.values = {1.0f, -2.5f};
  v1::TensorSpec proto;
  TensorSpecToProto(spec, &proto);
  ASSERT_EQ(proto.init().values().size(), 8u);
  // 1.0f = 0x3f800000, little-endian.
  EXPECT_EQ(proto.init().values().substr(0, 4), std::string("\x00\x00\x80\x3f", 4));
  float second;
  std::memcpy(&second, proto.init().values().data() + 4, 4);
  EXPECT_EQ(second, -2.5f);
}

TEST(SpecToProto, ZerosAndConstantAndNormal) {
  TensorSpec spec;
  spec.name = "t";
  v1::TensorSpec proto;
  TensorSpecToProto(spec, &proto);
  EXPECT_TRUE(proto.init().has_zeros());
  EXPECT_EQ(proto.shape_size(), 0);  // scalar
  spec.init.kind = Initializer::Kind::kConstant;
  spec.init.a = 3.0f;
  TensorSpecToProto(spec, &proto);
  ASSERT_TRUE(proto.init().has_constant());
  EXPECT_EQ(proto.init().constant().value(), 3.0f);
  spec.init.kind = Initializer::Kind::kNormal;
  spec.init.b = 0.1f;
  spec.init.seed = 9;
  TensorSpecToProto(spec, &proto);
  ASSERT_TRUE(proto.init().has_normal());
  EXPECT_EQ(proto.init().normal().stddev(), 0.1f);
  EXPECT_EQ(proto.init().normal().seed(), 9u);
}

TEST(LayoutFromProto, ComputesElementsAndRejectsUnresolvedChunks) {
  v1::TensorSpec proto;
  proto.set_name("w");
  proto.add_shape(784);
  proto.add_shape(256);
  proto.set_chunk_elements(65536);
  absl::StatusOr<TensorLayout> layout = LayoutFromProto(proto);
  ASSERT_TRUE(layout.ok()) << layout.status();
  EXPECT_EQ(layout->num_elements, 784u * 256u);
  EXPECT_EQ(layout->num_chunks(), 4u);  // 200704 / 65536 = 3.06

  v1::TensorSpec scalar;
  scalar.set_name("s");
  scalar.set_chunk_elements(8);
  layout = LayoutFromProto(scalar);
  ASSERT_TRUE(layout.ok());
  EXPECT_EQ(layout->num_elements, 1u);

  proto.set_chunk_elements(0);
  EXPECT_EQ(LayoutFromProto(proto).status().code(), absl::StatusCode::kInvalidArgument);
  proto.set_chunk_elements(4);
  proto.add_shape(0);
  EXPECT_EQ(LayoutFromProto(proto).status().code(), absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace dcasgd
