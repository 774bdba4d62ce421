"""Tensor declarations: TensorSpec and the initialisers of ps.proto."""

import dataclasses

import numpy as np

from dcasgd.v1 import ps_pb2


def zeros():
    return ps_pb2.Initializer(zeros=ps_pb2.Initializer.Zeros())


def constant(value):
    return ps_pb2.Initializer(constant=ps_pb2.Initializer.Constant(value=value))


def uniform(low, high, seed=0):
    """Uniform on [low, high), seeded per chunk from (seed, chunk index)."""
    return ps_pb2.Initializer(uniform=ps_pb2.Initializer.Uniform(low=low, high=high, seed=seed))


def normal(mean, stddev, seed=0):
    return ps_pb2.Initializer(normal=ps_pb2.Initializer.Normal(mean=mean, stddev=stddev, seed=seed))


def values(array):
    """Explicit initial values: all prod(shape) elements, row-major. Bounded by
    the message size limit: for small tensors."""
    flat = np.ascontiguousarray(array, dtype="<f4").reshape(-1)
    return ps_pb2.Initializer(values=flat.tobytes())


@dataclasses.dataclass(frozen=True)
class TensorSpec:
    """A named dense float32 tensor to declare.

    name: any non-empty UTF-8 string, unique in the job.
    shape: dimensions, each >= 1; () is a scalar.
    chunk_elements: elements per chunk; 0 means the server default (65536).
    init: an ps_pb2.Initializer (see zeros(), constant(), uniform(), normal(),
      values()); None means zeros.
    """

    name: str
    shape: tuple
    chunk_elements: int = 0
    init: object = None

    def to_proto(self):
        spec = ps_pb2.TensorSpec(name=self.name, shape=[int(d) for d in self.shape],
                                 chunk_elements=int(self.chunk_elements))
        spec.init.CopyFrom(self.init if self.init is not None else zeros())
        return spec


def to_proto(spec):
    """A TensorSpec or a ps_pb2.TensorSpec as ps_pb2.TensorSpec."""
    if isinstance(spec, ps_pb2.TensorSpec):
        return spec
    if isinstance(spec, TensorSpec):
        return spec.to_proto()
    raise TypeError("expected dcasgd.TensorSpec or ps_pb2.TensorSpec, got %r" % type(spec))
