"""dcasgd.DataCoordinatorClient: leases of data-set shards (coordinator.proto),
served by parameter shard 0."""

import grpc

from dcasgd import _rpc
from dcasgd import security as security_lib
from dcasgd.v1 import coordinator_pb2
from dcasgd.v1 import coordinator_pb2_grpc


class DataCoordinatorClient:
    """Thin wrapper of dcasgd.v1.DataCoordinator at `address` (shard 0's
    "host:port", or "a|b" for both members of a replicated shard 0: calls
    move to the other member after a transient failure).

    Each method returns the response message; failures are dcasgd.Error
    (UNAVAILABLE, CANCELLED or DEADLINE_EXCEEDED after retries with backoff:
    shard 0 restarting, or unable to save its schedule, in which case nothing
    changed; FAILED_PRECONDITION for an unknown or expired lease, or a job
    configured differently; UNAUTHENTICATED for a lease renewed or completed
    without its secret; UNAUTHENTICATED or PERMISSION_DENIED from a shard
    with authentication: the lease calls need role worker, job_status role
    reader). Security keyword arguments as dcasgd.Client (dcasgd.security).
    Thread-safe.

    A lease is renewed and completed with the DataLease that acquire()
    returned: its lease_secret proves this worker acquired it (lease ids
    count up and are easy to guess). Do not log the secret.
    """

    def __init__(self, address, timeout=30.0, max_attempts=8, credentials=None, **security):
        self._address = address
        self._timeout = timeout
        self._policy = _rpc.RetryPolicy(max_attempts=max_attempts)
        creds = security_lib.credentials_from(credentials, **security)
        self._members = _rpc.Members(
            address, lambda m, pair: creds.channel(m, options=_rpc.channel_options(pair)),
            coordinator_pb2_grpc.DataCoordinatorStub)

    def acquire(self, worker_name, num_data_shards, epochs):
        """AcquireDataShardResponse: `lease`, `retry_after_ms` or `job_done`
        (check response.WhichOneof("result"))."""
        request = coordinator_pb2.AcquireDataShardRequest(
            worker_name=worker_name, num_data_shards=num_data_shards, epochs=epochs)
        return self._call(
            lambda: self._members.stub.AcquireDataShard(request, timeout=self._timeout))

    def renew(self, lease, lease_secret=b""):
        """Renews `lease`: the DataLease acquire() returned (or its lease_id,
        with lease_secret)."""
        lease_id, secret = _lease_key(lease, lease_secret)
        request = coordinator_pb2.RenewDataLeaseRequest(lease_id=lease_id, lease_secret=secret)
        return self._call(
            lambda: self._members.stub.RenewDataLease(request, timeout=self._timeout))

    def complete(self, lease, lease_secret=b""):
        """Completes `lease`: the DataLease acquire() returned (or its
        lease_id, with lease_secret)."""
        lease_id, secret = _lease_key(lease, lease_secret)
        request = coordinator_pb2.CompleteDataShardRequest(lease_id=lease_id,
                                                           lease_secret=secret)
        return self._call(
            lambda: self._members.stub.CompleteDataShard(request, timeout=self._timeout))

    def job_status(self):
        request = coordinator_pb2.GetJobStatusRequest()
        return self._call(
            lambda: self._members.stub.GetJobStatus(request, timeout=self._timeout))

    def close(self):
        self._members.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.close()

    def _call(self, attempt):
        return _rpc.call(attempt, self._policy, address=self._address, members=self._members)


def _lease_key(lease, lease_secret):
    """(lease_id, lease_secret) of a DataLease message, or of an id and a
    secret given apart."""
    if isinstance(lease, coordinator_pb2.DataLease):
        return lease.lease_id, lease.lease_secret
    return int(lease), bytes(lease_secret)
