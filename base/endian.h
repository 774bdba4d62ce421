#ifndef DCASGD_BASE_ENDIAN_H_
#define DCASGD_BASE_ENDIAN_H_

// dcasgd moves float32 values as little-endian bytes without converting them:
// chunk values and explicit initial values on the wire (protos/dcasgd/v1/
// ps.proto), the gradient chunks the shard store updates from, the client's
// buffers, and the arrays of checkpoints (docs/checkpoint-format.md). That is
// right only on a little-endian host with IEEE-754 float32, and this is the
// one place that says so: every file that reinterprets float bytes includes
// it.
static_assert(sizeof(float) == 4, "dcasgd moves float32 values as 4-byte words");
static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__,
              "dcasgd moves float32 values as little-endian bytes and needs a little-endian host");

#endif  // DCASGD_BASE_ENDIAN_H_
