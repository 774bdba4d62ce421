"""Chunk values on the wire (ps.proto Dtype): little-endian float32, or
bfloat16 / float16 for half the bytes.

16-bit values are the float32 values rounded to nearest, ties to even; NaN
stays NaN and values beyond the format's range become +-Inf (float16 holds
|x| <= 65504). Decoding is exact. numpy has float16; bfloat16 is the upper
half of a float32 and is rounded with integer arithmetic on uint32 views, as
the C++ code does (core/dtype.cc), so both give the same bits.
"""

import numpy as np

from dcasgd.v1 import ps_pb2

_FLOAT32_LE = np.dtype("<f4")
_UINT16_LE = np.dtype("<u2")
_FLOAT16_LE = np.dtype("<f2")

# Option names (as the C++ worker's --wire_dtype) and their ps.proto values.
DTYPES = {
    "float32": ps_pb2.DTYPE_FLOAT32,
    "bfloat16": ps_pb2.DTYPE_BFLOAT16,
    "float16": ps_pb2.DTYPE_FLOAT16,
}


def dtype_value(name):
    """The ps.proto Dtype of an option name; ValueError naming the choices."""
    if name not in DTYPES:
        raise ValueError("wire_dtype %r: use one of %s" % (name, ", ".join(DTYPES)))
    return DTYPES[name]


def element_bytes(value):
    """Bytes per element of a ps.proto Dtype value (KeyError if unknown)."""
    return {ps_pb2.DTYPE_FLOAT32: 4, ps_pb2.DTYPE_BFLOAT16: 2, ps_pb2.DTYPE_FLOAT16: 2}[value]


def to_bfloat16_bits(values):
    """float32 array -> uint16 bfloat16 bits, round to nearest even, NaN kept
    a (quiet) NaN of the same sign."""
    bits = np.ascontiguousarray(values, dtype=_FLOAT32_LE).view(np.uint32)
    # bits + 0x7fff + lsb cannot wrap: the largest non-NaN pattern is -Inf,
    # 0xff800000; NaNs take the other branch.
    rounded = (bits + np.uint32(0x7FFF) + ((bits >> np.uint32(16)) & np.uint32(1))) >> np.uint32(16)
    nan = (bits & np.uint32(0x7FFFFFFF)) > np.uint32(0x7F800000)
    quiet = (bits >> np.uint32(16)) | np.uint32(0x40)
    return np.where(nan, quiet, rounded).astype(_UINT16_LE)


def from_bfloat16_bits(bits):
    """uint16 bfloat16 bits -> float32 array (exact)."""
    return (np.asarray(bits, dtype=np.uint32) << np.uint32(16)).view(_FLOAT32_LE)


def encode(values, value):
    """A flat float32 array as the `values` bytes of a chunk in ps.proto
    Dtype `value`."""
    if value == ps_pb2.DTYPE_FLOAT32:
        return np.ascontiguousarray(values, dtype=_FLOAT32_LE).tobytes()
    if value == ps_pb2.DTYPE_BFLOAT16:
        return to_bfloat16_bits(values).tobytes()
    with np.errstate(over="ignore"):  # beyond 65504 is +-Inf, as documented
        return np.asarray(values, dtype=_FLOAT32_LE).astype(_FLOAT16_LE).tobytes()


def decode(data, value):
    """The `values` bytes of a chunk in ps.proto Dtype `value` as a float32
    array."""
    if value == ps_pb2.DTYPE_FLOAT32:
        return np.frombuffer(data, dtype=_FLOAT32_LE)
    if value == ps_pb2.DTYPE_BFLOAT16:
        return from_bfloat16_bits(np.frombuffer(data, dtype=_UINT16_LE))
    return np.frombuffer(data, dtype=_FLOAT16_LE).astype(np.float32)


def rounded(values, name):
    """`values` rounded to the wire dtype `name` and back: what a pull in that
    dtype returns, and what a push in it applies."""
    value = dtype_value(name)
    return decode(encode(np.asarray(values, dtype=np.float32).reshape(-1), value),
                  value).reshape(np.shape(values))
