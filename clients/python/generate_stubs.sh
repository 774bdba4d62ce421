#!/bin/sh
# Generates the Python protobuf/gRPC modules the `dcasgd` package needs into
# OUTDIR (never committed):
#   OUTDIR/dcasgd/v1/{ps,coordinator,replication}_pb2{,_grpc}.py  from protos/
#   OUTDIR/dcasgd/grpc_health/v1/health_pb2{,_grpc}.py        grpc.health.v1
#   OUTDIR/dcasgd/grpc_reflection/v1alpha/reflection_pb2{,_grpc}.py
#                                                   grpc.reflection.v1alpha
# The gRPC standard protos come from Debian's grpc-proto package
# (GRPC_PROTO_DIR, default /usr/share/grpc-proto). They are compiled under
# dcasgd/ because their natural module path (grpc.health...) would collide
# with the installed `grpc` package; the proto package names, and so the
# service names on the wire, are unchanged.
#
# No __init__.py is written: the directories are namespace portions that the
# `dcasgd` package adds to its own __path__ (see dcasgd/_stubs.py).
# The output replaces OUTDIR/dcasgd as a whole (other files in OUTDIR are left
# alone). Needs protoc and /usr/bin/grpc_python_plugin (apt:
# protobuf-compiler, protobuf-compiler-grpc, grpc-proto).
set -eu

if [ $# -ne 1 ]; then
  echo "usage: $0 OUTDIR" >&2
  exit 2
fi
out=$1
here=$(cd "$(dirname "$0")" && pwd)
protos=${DCASGD_PROTO_DIR:-$here/../../protos}
grpc_protos=${GRPC_PROTO_DIR:-/usr/share/grpc-proto}
protoc=${PROTOC:-protoc}
plugin=${GRPC_PYTHON_PLUGIN:-/usr/bin/grpc_python_plugin}

for f in "$protos/dcasgd/v1/ps.proto" "$protos/dcasgd/v1/coordinator.proto" \
         "$protos/dcasgd/v1/replication.proto" \
         "$grpc_protos/grpc/health/v1/health.proto" \
         "$grpc_protos/grpc/reflection/v1alpha/reflection.proto" "$plugin"; do
  if [ ! -e "$f" ]; then
    echo "$0: missing $f" >&2
    exit 1
  fi
done

mkdir -p "$out"
work=$(mktemp -d "$out/.stubs.XXXXXX")
trap 'rm -rf "$work"' EXIT

# Stage the standard protos under dcasgd/ (see above).
mkdir -p "$work/src/dcasgd/grpc_health/v1" "$work/src/dcasgd/grpc_reflection/v1alpha" "$work/gen"
cp "$grpc_protos/grpc/health/v1/health.proto" "$work/src/dcasgd/grpc_health/v1/"
cp "$grpc_protos/grpc/reflection/v1alpha/reflection.proto" \
   "$work/src/dcasgd/grpc_reflection/v1alpha/"

"$protoc" --proto_path="$protos" --proto_path="$work/src" \
  --python_out="$work/gen" --grpc_out="$work/gen" \
  --plugin=protoc-gen-grpc="$plugin" \
  dcasgd/v1/ps.proto dcasgd/v1/coordinator.proto dcasgd/v1/replication.proto \
  dcasgd/grpc_health/v1/health.proto dcasgd/grpc_reflection/v1alpha/reflection.proto

rm -rf "$out/dcasgd"
mv "$work/gen/dcasgd" "$out/dcasgd"
