"""gRPC health (grpc.health.v1) and reflection (grpc.reflection.v1alpha) of a
running shard, without grpcio-health-checking or grpcio-reflection (the stubs
are generated from Debian's grpc-proto package, see generate_stubs.sh)."""

import time

import grpc

from dcasgd import security as security_lib
from dcasgd.errors import Error
from dcasgd.grpc_health.v1 import health_pb2
from dcasgd.grpc_health.v1 import health_pb2_grpc
from dcasgd.grpc_reflection.v1alpha import reflection_pb2
from dcasgd.grpc_reflection.v1alpha import reflection_pb2_grpc


def list_services(address, timeout=10.0, credentials=None, **security):
    """Sorted full names of the services `address` serves, by reflection
    (open to every caller; TLS as dcasgd.Client's security arguments).

    Raises dcasgd.Error (e.g. UNIMPLEMENTED when the server has no reflection,
    UNAVAILABLE when it cannot be reached within `timeout` seconds).
    """
    with security_lib.credentials_from(credentials, **security).channel(address) as channel:
        stub = reflection_pb2_grpc.ServerReflectionStub(channel)
        request = reflection_pb2.ServerReflectionRequest(list_services="")
        try:
            responses = stub.ServerReflectionInfo(iter([request]), timeout=timeout)
            response = next(responses)
        except grpc.RpcError as error:
            raise Error.from_rpc_error(error, address=address) from None
        if response.HasField("error_response"):
            raise Error(grpc.StatusCode(_code_tuple(response.error_response.error_code)),
                        response.error_response.error_message, address=address)
        return sorted(s.name for s in response.list_services_response.service)


def _code_tuple(number):
    for code in grpc.StatusCode:
        if code.value[0] == number:
            return code.value
    return grpc.StatusCode.UNKNOWN.value


def health_check(address, service="", timeout=10.0, credentials=None, **security):
    """The serving status of `service` ("" = the whole server) at `address`
    (open to every caller; TLS as dcasgd.Client's security arguments):
    "SERVING", "NOT_SERVING", "UNKNOWN" or "SERVICE_UNKNOWN". Raises
    dcasgd.Error when the call fails (NOT_FOUND for a service the server does
    not know, UNAVAILABLE when unreachable)."""
    with security_lib.credentials_from(credentials, **security).channel(address) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        try:
            response = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=timeout)
        except grpc.RpcError as error:
            raise Error.from_rpc_error(error, address=address) from None
        return health_pb2.HealthCheckResponse.ServingStatus.Name(response.status)


def wait_until_serving(address, service="", timeout=30.0, poll_interval=0.05, credentials=None,
                       **security):
    """Polls health_check until it says SERVING; raises dcasgd.Error
    (DEADLINE_EXCEEDED, with the last answer) after `timeout` seconds."""
    credentials = security_lib.credentials_from(credentials, **security)
    deadline = time.monotonic() + timeout
    last = "no answer"
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise Error(grpc.StatusCode.DEADLINE_EXCEEDED,
                        "not SERVING after %.1f s (last: %s)" % (timeout, last), address=address)
        try:
            last = health_check(address, service, timeout=min(remaining, 2.0),
                                credentials=credentials)
            if last == "SERVING":
                return
        except Error as error:
            last = str(error)
        time.sleep(min(poll_interval, max(0.0, deadline - time.monotonic())))
