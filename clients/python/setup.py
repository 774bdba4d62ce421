"""Generates the protobuf/gRPC modules while the package is built.

Everything else is declared in pyproject.toml. build_py runs
generate_stubs.sh (protoc and grpc_python_plugin from Debian's
protobuf-compiler and protobuf-compiler-grpc, the gRPC standard protos from
grpc-proto) on the repository's protos/ (or $DCASGD_PROTO_DIR) and adds the
modules to the built package, so a wheel holds them and needs no compiler
where it is installed.
"""

import os
import subprocess
import tempfile

from setuptools import setup
from setuptools.command.build_py import build_py

_HERE = os.path.dirname(os.path.abspath(__file__))


class BuildPyWithStubs(build_py):
    """build_py, then the generated dcasgd/v1, grpc_health and grpc_reflection modules."""

    def run(self):
        super().run()
        with tempfile.TemporaryDirectory() as out:
            subprocess.run(["/bin/sh", os.path.join(_HERE, "generate_stubs.sh"), out],
                           check=True)
            generated = os.path.join(out, "dcasgd")
            for root, _, files in os.walk(generated):
                relative = os.path.relpath(root, generated)
                target = os.path.join(self.build_lib, "dcasgd", relative)
                self.mkpath(target)
                for name in files:
                    if name.endswith(".py"):
                        self.copy_file(os.path.join(root, name), os.path.join(target, name))


setup(cmdclass={"build_py": BuildPyWithStubs})
