"""Retry of transient errors with exponential backoff and jitter, and the
channel options every dcasgd client uses."""

import itertools
import random
import threading
import time

import grpc

from dcasgd.errors import Error


# Codes of a shard restarting (UNAVAILABLE), shutting down with the call in
# flight (CANCELLED) or hung (DEADLINE_EXCEEDED). Every call of the API is
# safe to repeat: pushes carry a step, so a shard that applied a push whose
# answer was lost answers again without applying it twice.
TRANSIENT_CODES = frozenset([grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED,
                             grpc.StatusCode.DEADLINE_EXCEEDED])

# Reconnect to a returning shard at least every second (gRPC's defaults: 1 s
# growing by 1.6x to 2 min, 20 s minimum connect timeout, leave a restarted
# shard unused for several times the outage), and notice a hung or vanished
# shard with keepalive pings (every 10 s, 5 s to answer; the shards accept
# pings that often). A member of a replicated shard ("a|b") is pinged after
# 1 s without data with 2 s to answer, so a hung primary is left within about
# 3 s for its replica. The same values as the C++ client
# (clients/cpp/channel_args.h).
CHANNEL_OPTIONS = [
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 1000),
    ("grpc.min_reconnect_backoff_ms", 1000),
    ("grpc.keepalive_time_ms", 10000),
    ("grpc.keepalive_timeout_ms", 5000),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.max_pings_without_data", 0),
]
_PAIR_KEEPALIVE = {"grpc.keepalive_time_ms": 1000, "grpc.keepalive_timeout_ms": 2000}

# The trailing metadata with which a member of a replicated shard that is not
# the primary names its role when it refuses a call (UNAVAILABLE): starting,
# replica, catching-up, deposed, unconfirmed, handing-over (docs/design.md,
# "How clients find the primary").
ROLE_METADATA_KEY = "dcasgd-role"


def refusing_role(error):
    """The role a member named when it refused the call (it is not the
    primary), or "" when `error` is not such a refusal."""
    if error.code() != grpc.StatusCode.UNAVAILABLE:
        return ""
    trailers = getattr(error, "trailing_metadata", None)
    for key, value in (trailers() if trailers is not None else None) or ():
        if key == ROLE_METADATA_KEY:
            return value.decode() if isinstance(value, bytes) else value
    return ""


def channel_options(pair, extra=()):
    """`extra` (e.g. message size limits) followed by CHANNEL_OPTIONS, with
    the keepalive of a replicated shard's member when `pair`."""
    options = list(extra)
    for key, value in CHANNEL_OPTIONS:
        options.append((key, _PAIR_KEEPALIVE.get(key, value) if pair else value))
    return options


class RetryPolicy:
    """At most `max_attempts` attempts; the n-th wait (n = 0, 1, ...) is
    min(max_backoff, initial_backoff * multiplier^n) times a uniform factor in
    [1 - jitter, 1 + jitter], capped at max_backoff. Jitter spreads the retries
    of many workers after a shard restart. For `failover_wait` seconds from
    the first refusal by a member naming its role (a failover in progress),
    attempts do not count. Immutable; shareable.
    """

    def __init__(self, max_attempts=8, initial_backoff=0.05, max_backoff=1.0, multiplier=2.0,
                 jitter=0.2, failover_wait=30.0):
        if max_attempts < 1:
            raise ValueError("max_attempts must be >= 1")
        if failover_wait < 0:
            raise ValueError("failover_wait must be >= 0")
        self.max_attempts = max_attempts
        self.initial_backoff = initial_backoff
        self.max_backoff = max_backoff
        self.multiplier = multiplier
        self.jitter = jitter
        self.failover_wait = failover_wait

    def backoff(self):
        """The waits between attempts, without end."""
        current = self.initial_backoff
        while True:
            factor = 1.0 + random.uniform(-self.jitter, self.jitter)
            yield min(self.max_backoff, current * factor)
            current = min(self.max_backoff, current * self.multiplier)

    def delays(self, members=1):
        """The waits between attempts: max_attempts * members - 1 of them
        (a replicated shard gets max_attempts per member)."""
        return itertools.islice(self.backoff(), self.max_attempts * members - 1)


def channel_waiter(channel):
    """A `sleep` for call(): waits the delay, or less when `channel` was not
    connected and reconnects meanwhile (a restarted shard is used as soon as
    it is back, not a whole backoff later)."""

    def wait(delay):
        started = time.monotonic()
        ready = grpc.channel_ready_future(channel)
        try:
            ready.result(timeout=delay)
        except grpc.FutureTimeoutError:
            return
        finally:
            ready.cancel()
        waited = time.monotonic() - started
        if waited < 0.005:
            # Connected already: the shard itself answered (e.g. shutting
            # down), so back off.
            time.sleep(max(0.0, delay - waited))

    return wait


# How long gRPC Python's connectivity polling goes on after the last watch
# of a channel ended (its poll period, 0.2 s, with a margin).
_CONNECTIVITY_POLL_SECONDS = 0.3


def parse_members(address):
    """"a|b" (the two members of a replicated shard) -> ["a", "b"];
    "a" -> ["a"]. ValueError for an empty member, more than two, or two
    equal ones."""
    members = [m.strip() for m in address.split("|")]
    if len(members) > 2 or not all(members) or len(set(members)) != len(members):
        raise ValueError("shard address %r: give host:port, or a|b for the two members of a "
                         "replicated shard" % address)
    return members


class Members:
    """The members of one shard: one, or two for a replicated shard
    ("a|b"; docs/design.md, "Replicated shards"), of which one at a time
    serves clients and the other answers UNAVAILABLE. Calls go to the
    current member; after a transient failure the next attempt goes to the
    other one, and later calls stay with the member that answered. A
    worker's id and session are replicated, so nothing re-joins.
    Thread-safe."""

    def __init__(self, address, make_channel, make_stub):
        """make_channel(member, pair) -> grpc.Channel; `pair` tells whether
        the shard has two members (dcasgd._rpc.channel_options)."""
        self.address = address  # "a" or "a|b", for messages
        members = parse_members(address)
        self.channels = [make_channel(a, len(members) > 1) for a in members]
        self._stubs = [make_stub(c) for c in self.channels]
        self._waiters = [channel_waiter(c) for c in self.channels]
        self._lock = threading.Lock()
        self._current = 0  # guarded by _lock
        self._waited_until = 0.0  # guarded by _lock: when the last wait ended

    def __len__(self):
        return len(self.channels)

    def current(self):
        with self._lock:
            return self._current

    @property
    def stub(self):
        """The current member's stub."""
        return self._stubs[self.current()]

    def move_on(self, failed):
        """After a transient failure at member `failed`: the other member
        becomes the current one (unless a concurrent call moved it)."""
        with self._lock:
            if self._current == failed:
                self._current = (failed + 1) % len(self.channels)

    def wait(self, delay):
        """Waits before a retry at the current member (less when its channel
        reconnects)."""
        self._waiters[self.current()](delay)
        with self._lock:
            self._waited_until = time.monotonic()

    def close(self):
        # A wait watched a channel's connectivity, which gRPC polls on a
        # thread of its own for up to 0.2 s after the watch ends; closing the
        # channel meanwhile makes that thread print a ValueError
        # (grpc/grpc#18995). Let it end first.
        with self._lock:
            settle = self._waited_until + _CONNECTIVITY_POLL_SECONDS - time.monotonic()
        if settle > 0:
            time.sleep(settle)
        for channel in self.channels:
            channel.close()


def call(attempt, policy, shard=None, address=None, sleep=time.sleep, members=None):
    """Returns attempt(); a grpc.RpcError becomes dcasgd.Error.

    TRANSIENT_CODES are retried per `policy` (per member with `members`, a
    Members: each retry then goes to the other member, and waits with its
    channel instead of `sleep`); `attempt` must redo the whole call (for
    streams: make a new request iterator and read the whole response), with
    members.stub when given. A member that refuses naming its role (not the
    primary) is left for the other one at once, with a wait only once every
    member refused in a row; for policy.failover_wait from the first such
    refusal the attempts are not counted.
    """
    count = len(members) if members is not None else 1
    delays = policy.delays(count)
    failover_delays = policy.backoff()
    failover_until = None
    refused_in_a_row = 0
    while True:
        member = members.current() if members is not None else 0
        try:
            return attempt()
        except grpc.RpcError as error:
            if error.code() in TRANSIENT_CODES:
                refused = bool(refusing_role(error))
                now = time.monotonic()
                if refused and failover_until is None:
                    failover_until = now + policy.failover_wait
                if failover_until is not None and now < failover_until:
                    # A failover in progress: not counted.
                    refused_in_a_row = refused_in_a_row + 1 if refused else 0
                    delay = 0.0
                    if refused_in_a_row == 0 or refused_in_a_row >= count:
                        refused_in_a_row = 0
                        delay = next(failover_delays)
                else:
                    delay = next(delays, None)
                if delay is not None:
                    if members is not None:
                        members.move_on(member)
                        if delay > 0:
                            members.wait(delay)
                    else:
                        sleep(delay)
                    continue
            raise Error.from_rpc_error(error, shard, address) from None
