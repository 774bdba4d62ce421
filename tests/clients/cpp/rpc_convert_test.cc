#include "clients/cpp/rpc_convert.h"

#include <cstring>
#include <string>

#include "gtest/gtest.h"

namespace dcasgd {
namespace client {
namespace {

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
  SpecToProto(spec, &proto);
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
  SpecToProto(spec, &proto);
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
  SpecToProto(spec, &proto);
  EXPECT_TRUE(proto.init().has_zeros());
  EXPECT_EQ(proto.shape_size(), 0);  // scalar
  spec.init.kind = Initializer::Kind::kConstant;
  spec.init.a = 3.0f;
  SpecToProto(spec, &proto);
  ASSERT_TRUE(proto.init().has_constant());
  EXPECT_EQ(proto.init().constant().value(), 3.0f);
  spec.init.kind = Initializer::Kind::kNormal;
  spec.init.b = 0.1f;
  spec.init.seed = 9;
  SpecToProto(spec, &proto);
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
}  // namespace client
}  // namespace dcasgd
