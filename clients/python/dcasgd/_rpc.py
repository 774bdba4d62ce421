"""Retry of UNAVAILABLE with exponential backoff and jitter."""

import random
import time

import grpc

from dcasgd.errors import Error


class RetryPolicy:
    """At most `max_attempts` attempts; the n-th wait (n = 0, 1, ...) is
    min(max_backoff, initial_backoff * multiplier^n) times a uniform factor in
    [1 - jitter, 1 + jitter], capped at max_backoff. Jitter spreads the retries
    of many workers after a shard restart. Immutable; shareable.
    """

    def __init__(self, max_attempts=8, initial_backoff=0.05, max_backoff=2.0, multiplier=2.0,
                 jitter=0.2):
        if max_attempts < 1:
            raise ValueError("max_attempts must be >= 1")
        self.max_attempts = max_attempts
        self.initial_backoff = initial_backoff
        self.max_backoff = max_backoff
        self.multiplier = multiplier
        self.jitter = jitter

    def delays(self):
        """The waits between attempts: max_attempts - 1 of them."""
        current = self.initial_backoff
        for _ in range(self.max_attempts - 1):
            factor = 1.0 + random.uniform(-self.jitter, self.jitter)
            yield min(self.max_backoff, current * factor)
            current = min(self.max_backoff, current * self.multiplier)


def call(attempt, policy, shard=None, address=None, sleep=time.sleep):
    """Returns attempt(); a grpc.RpcError becomes dcasgd.Error.

    UNAVAILABLE is retried per `policy`; `attempt` must redo the whole call
    (for streams: make a new request iterator and read the whole response).
    """
    delays = policy.delays()
    while True:
        try:
            return attempt()
        except grpc.RpcError as error:
            if error.code() == grpc.StatusCode.UNAVAILABLE:
                delay = next(delays, None)
                if delay is not None:
                    sleep(delay)
                    continue
            raise Error.from_rpc_error(error, shard, address) from None
