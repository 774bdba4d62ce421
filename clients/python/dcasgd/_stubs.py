"""Finds the generated protobuf/gRPC modules (never committed).

An installed package (pip, a wheel: see setup.py) holds them inside itself,
in dcasgd/v1/ etc.; then nothing is looked up. A source checkout has none,
and the `dcasgd` package adds one directory holding the generated
dcasgd/{v1,grpc_health,grpc_reflection}/ modules to its own __path__. The first
of these that exists is used:

1. $DCASGD_PYTHON_STUBS: a directory made by clients/python/generate_stubs.sh.
2. An entry E of sys.path (e.g. from PYTHONPATH) with E/dcasgd/v1/ps_pb2.py;
   the CMake target `dcasgd_python_stubs` generates BUILD/python for this.
3. A cache directory, $DCASGD_STUBS_CACHE or $XDG_CACHE_HOME/dcasgd or
   ~/.cache/dcasgd, holding stubs-<hash of the protos>/, generated there on
   first import by generate_stubs.sh (source checkouts only: it needs the
   protos/ tree, protoc and grpc_python_plugin). A change of the protos makes a
   new hash, hence fresh stubs.
"""

import hashlib
import os
import subprocess
import sys
import tempfile

_PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__))
_CLIENT_DIR = os.path.dirname(_PACKAGE_DIR)
_SCRIPT = os.path.join(_CLIENT_DIR, "generate_stubs.sh")
_PROTO_DIR = os.path.join(_CLIENT_DIR, "..", "..", "protos")
_GRPC_PROTO_DIR = os.environ.get("GRPC_PROTO_DIR", "/usr/share/grpc-proto")
_SOURCES = (
    os.path.join(_PROTO_DIR, "dcasgd", "v1", "ps.proto"),
    os.path.join(_PROTO_DIR, "dcasgd", "v1", "coordinator.proto"),
    os.path.join(_PROTO_DIR, "dcasgd", "v1", "replication.proto"),
    os.path.join(_GRPC_PROTO_DIR, "grpc", "health", "v1", "health.proto"),
    os.path.join(_GRPC_PROTO_DIR, "grpc", "reflection", "v1alpha", "reflection.proto"),
    _SCRIPT,
)


def _has_stubs(root):
    return os.path.isfile(os.path.join(root, "dcasgd", "v1", "ps_pb2.py"))


def _cache_root():
    explicit = os.environ.get("DCASGD_STUBS_CACHE")
    if explicit:
        return explicit
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "dcasgd")


def _generate_into_cache():
    missing = [s for s in _SOURCES if not os.path.isfile(s)]
    if missing:
        raise ImportError(
            "dcasgd: generated stubs not found (set DCASGD_PYTHON_STUBS or put the "
            "output of generate_stubs.sh on PYTHONPATH), and they cannot be generated "
            "here: missing " + ", ".join(missing))
    digest = hashlib.sha256()
    for source in _SOURCES:
        with open(source, "rb") as f:
            digest.update(f.read())
    cache = _cache_root()
    target = os.path.join(cache, "stubs-" + digest.hexdigest()[:16])
    if _has_stubs(target):
        return target
    os.makedirs(cache, exist_ok=True)
    # Generate beside the target and rename: concurrent first imports (e.g.
    # parallel test processes) each make their own copy and one rename wins.
    staging = tempfile.mkdtemp(prefix=".stubs-", dir=cache)
    try:
        result = subprocess.run(["/bin/sh", _SCRIPT, staging], capture_output=True, text=True,
                                check=False)
        if result.returncode != 0:
            raise ImportError("dcasgd: generate_stubs.sh failed: " + result.stderr.strip())
        try:
            os.rename(staging, target)
        except OSError:
            if not _has_stubs(target):
                raise
    finally:
        if os.path.isdir(staging):
            subprocess.run(["rm", "-rf", staging], check=False)
    return target


def bundled():
    """True when the package was built with its stubs (an installed wheel)."""
    return _has_stubs(_CLIENT_DIR) and os.path.isfile(os.path.join(_PACKAGE_DIR, "v1",
                                                                    "ps_pb2_grpc.py"))


def locate():
    """Returns the directory whose dcasgd/ subdirectory holds the stubs.

    Raises ImportError when none is found and none can be generated.
    """
    explicit = os.environ.get("DCASGD_PYTHON_STUBS")
    if explicit:
        if not _has_stubs(explicit):
            raise ImportError("dcasgd: DCASGD_PYTHON_STUBS=%s holds no dcasgd/v1/ps_pb2.py" %
                              explicit)
        return os.path.abspath(explicit)
    for entry in sys.path:
        if entry and _has_stubs(entry):
            return os.path.abspath(entry)
    return _generate_into_cache()
