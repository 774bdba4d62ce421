"""dcasgd: Python client of the dcasgd parameter shards (protos/dcasgd/v1).

    import dcasgd
    with dcasgd.Client(["127.0.0.1:7000", "127.0.0.1:7001"], worker_name="w0") as ps:
        ps.declare([dcasgd.TensorSpec("softmax/w", (784, 10))])
        weights = ps.pull(["softmax/w"])
        weights = ps.pushpull({"softmax/w": gradient})

The generated protobuf/gRPC modules (dcasgd.v1.ps_pb2, ...) are not part of
the source tree: an installed package (pyproject.toml) holds them; from a
checkout see dcasgd/_stubs.py for where they are looked up
(DCASGD_PYTHON_STUBS, PYTHONPATH, or generated into a cache on first import).
"""

import os as _os

from dcasgd import _stubs

if not _stubs.bundled():
    __path__.append(_os.path.join(_stubs.locate(), "dcasgd"))  # noqa: F821 (package __path__)

# pylint: disable=wrong-import-position
from dcasgd.errors import Error  # noqa: E402
from dcasgd.placement import DEFAULT_CHUNK_ELEMENTS, Layout, fnv1a64, shard_of_chunk  # noqa: E402
from dcasgd.specs import TensorSpec, constant, normal, uniform, values, zeros  # noqa: E402
from dcasgd.client import Client, PushResult  # noqa: E402
from dcasgd.coordinator import DataCoordinatorClient  # noqa: E402
from dcasgd.introspect import health_check, list_services, wait_until_serving  # noqa: E402
from dcasgd.security import Credentials  # noqa: E402

__all__ = [
    "Client", "Credentials", "DataCoordinatorClient", "DEFAULT_CHUNK_ELEMENTS", "Error", "Layout", "PushResult",
    "TensorSpec", "constant", "fnv1a64", "health_check", "list_services", "normal",
    "shard_of_chunk", "uniform", "values", "wait_until_serving", "zeros",
]
