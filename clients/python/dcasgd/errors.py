"""dcasgd.Error: every failure of a call, with the gRPC status code."""

import grpc


class Error(Exception):
    """A failed call to a shard (or a request the client refused to send).

    Attributes:
      code: grpc.StatusCode, as documented in protos/dcasgd/v1/ps.proto.
        What to do: UNAVAILABLE (already retried with backoff) retry later;
        FAILED_PRECONDITION pull again and recompute (the client has re-joined
        the shard when its lease was lost); ABORTED pull and recompute;
        NOT_FOUND declare first; INVALID_ARGUMENT / ALREADY_EXISTS /
        RESOURCE_EXHAUSTED fix the request.
      message: the server's (or the client's) message.
      shard: index of the shard that answered, or None for a local check.
      address: that shard's address, or None.
    """

    def __init__(self, code, message, shard=None, address=None):
        self.code = code
        self.message = message
        self.shard = shard
        self.address = address
        where = "" if shard is None else "shard %d (%s): " % (shard, address)
        super().__init__("%s: %s%s" % (code.name, where, message))

    @classmethod
    def from_rpc_error(cls, error, shard=None, address=None):
        """Wraps a grpc.RpcError raised by a stub call."""
        code = error.code() if hasattr(error, "code") else grpc.StatusCode.UNKNOWN
        details = error.details() if hasattr(error, "details") else str(error)
        return cls(code, details or "", shard, address)
