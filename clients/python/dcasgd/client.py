"""dcasgd.Client: a worker (or evaluator) of the N parameter shards of a job."""

import collections
import concurrent.futures
import logging
import threading

import grpc
import numpy as np

from dcasgd import _rpc
from dcasgd import security as security_lib
from dcasgd import specs as specs_lib
from dcasgd import wire
from dcasgd.errors import Error
from dcasgd.placement import Layout
from dcasgd.v1 import ps_pb2
from dcasgd.v1 import ps_pb2_grpc

_LOG = logging.getLogger("dcasgd")
_FLOAT32_LE = np.dtype("<f4")

# What a push did: per shard index the shard version after the push (0 for
# shards that own none of the pushed chunks) and the staleness the shard
# reported (versions applied between this worker's pull and this push), and
# the push's step (ps.proto PushRequest.step).
PushResult = collections.namedtuple("PushResult", ["versions", "staleness", "step"],
                                    defaults=(0,))


class Client:
    """A client of the N parameter shards of one job (ps.proto).

    addresses: one "host:port" per shard, in shard-index order; "a|b" for the
      two members of a replicated shard (calls go to the member that serves
      and move to the other after a transient failure, without re-joining;
      docs/design.md, "Replicated shards").
    worker_name: the worker's stable identity (e.g. the pod name). None makes
      an evaluator: it never joins, pulls with worker id 0 (no backup is
      recorded) and cannot push.

    Placement is computed locally (dcasgd.placement): every call goes only to
    the shards owning chunks of the tensors involved, all of them in parallel
    (one thread per shard), one stream per shard and call. Values travel as
    little-endian float32; arrays are converted with np.frombuffer/tobytes,
    one copy per chunk. wire_dtype="bfloat16" or "float16" sends gradients
    and receives weights in 16 bits instead (half the bytes; ps.proto
    Dtype): values are rounded to nearest even (dcasgd.wire), arrays handed
    out are still float32, and float16 turns elements beyond 65504 into Inf,
    which the shards refuse as a non-finite gradient (INVALID_ARGUMENT).

    Errors are raised as dcasgd.Error (code = grpc.StatusCode):
      - UNAVAILABLE, CANCELLED and DEADLINE_EXCEEDED (a shard restarting,
        shutting down or hung) are retried with exponential backoff and
        jitter, at most max_attempts times per shard and call, then raised.
        A member of a replicated shard ("a|b") that refuses naming its role
        (dcasgd-role: it is not the primary) sends the call to the other
        member at once, and for failover_wait seconds from the first such
        refusal the attempts are not counted (a failover in progress).
        Pushes are retried with the same step, so a shard that applied a push
        whose answer was lost answers again without applying it twice.
      - FAILED_PRECONDITION from a push (lease lost, unknown worker, chunk not
        pulled) makes the client re-join that shard; the error is raised with
        "re-joined; pull again" appended: pull and recompute. A pull that gets
        it re-joins and retries once.
      - UNAUTHENTICATED (a shard refused this worker's session) is raised as
        it is: the client sends each shard's session with every request that
        acts as the worker, so only a bug or a forged request meets it.
      - Other codes are raised as the shard sent them.
      - Checks made before sending: NOT_FOUND for a tensor that is neither
        declared by this client nor known to the shards, INVALID_ARGUMENT for
        a gradient of the wrong size, FAILED_PRECONDITION for a push by an
        evaluator or after leave(). NaN/Inf are not checked here: the shards reject them.
      A push is applied shard by shard: when one shard fails, others may have
      applied their part. To push the same batch again after an error, pass
      the failed push's step (step = client.next_step(); push(..., step=step)
      and the same step again on retry): shards that applied it answer with
      their recorded result, the others apply the new push.

    Security (dcasgd.security): token= or token_file=, tls_ca=, tls_cert=,
    tls_key=, tls_server_name= (each defaulting to its DCASGD_* environment
    variable), or credentials= a dcasgd.security.Credentials. Shards with
    authentication answer UNAUTHENTICATED without a known token and
    PERMISSION_DENIED when its role may not make the call (an evaluator needs
    role reader, a worker role worker, checkpoint() role admin).

    Channels reconnect to a returning shard at least every second and ping
    with keepalives (dcasgd._rpc.CHANNEL_OPTIONS). Pushes of one client run
    one at a time (steps must reach each shard in order).

    With a worker_name the constructor joins every shard (see join()) and,
    with heartbeats=True, renews the leases in a daemon thread every third of
    the shortest lease. Thread-safe: calls may come from several threads; each
    blocks until every shard it touched has answered. Use close() (or a with
    block) to leave the shards and release the channels.
    """

    def __init__(self, addresses, worker_name=None, *, timeout=60.0, max_attempts=8,
                 initial_backoff=0.05, max_backoff=1.0, heartbeats=True,
                 max_message_bytes=64 << 20, join=True, credentials=None, token=None,
                 token_file=None, tls_ca=None, tls_cert=None, tls_key=None,
                 tls_server_name=None, wire_dtype="float32", failover_wait=30.0):
        # Versions and staleness of the last pushpull (see pushpull()).
        self.last_pushpull = None
        # Constant after construction.
        self._addresses = list(addresses)
        if not self._addresses:
            raise ValueError("dcasgd.Client needs at least one shard address")
        if worker_name is not None and not worker_name:
            raise ValueError("worker_name must be non-empty (or None for an evaluator)")
        self._worker_name = worker_name
        self._wire_dtype = wire.dtype_value(wire_dtype)
        self._timeout = timeout
        self._policy = _rpc.RetryPolicy(max_attempts=max_attempts,
                                        initial_backoff=initial_backoff, max_backoff=max_backoff,
                                        failover_wait=failover_wait)
        self._heartbeats = heartbeats
        sizes = [("grpc.max_send_message_length", max_message_bytes),
                 ("grpc.max_receive_message_length", max_message_bytes)]
        self.credentials = security_lib.credentials_from(
            credentials, token=token, token_file=token_file, tls_ca=tls_ca, tls_cert=tls_cert,
            tls_key=tls_key, tls_server_name=tls_server_name)
        self._members = [
            _rpc.Members(a, lambda m, pair: self.credentials.channel(
                m, options=_rpc.channel_options(pair, sizes)),
                         ps_pb2_grpc.ParameterShardStub) for a in self._addresses]
        # self._stubs[s]: the current member's stub of shard s.
        self._stubs = _CurrentStubs(self._members)
        self._pool = concurrent.futures.ThreadPoolExecutor(
            max_workers=len(self._addresses), thread_name_prefix="dcasgd-shard")
        self._stop_heartbeats = threading.Event()
        # Held for a whole push, so steps reach each shard in order.
        self._push_lock = threading.Lock()
        # push_async/pushpull_async: one thread, so asynchronous pushes run
        # in the order they were started (created on first use).
        self._async_pool = None

        # State below is guarded by self._lock.
        self._lock = threading.Lock()
        self._worker_ids = [0] * len(self._addresses)  # 0: not joined
        # JoinResponse.session per shard: a secret, never logged.
        self._sessions = [b""] * len(self._addresses)
        self._lease_ms = [0] * len(self._addresses)
        self._layouts = {}  # name -> Layout
        self._heartbeat_thread = None
        self._closed = False
        self._last_step = 0  # the last push step handed out

        if worker_name is not None and join:
            try:
                self.join()
            except BaseException:
                self._release()
                raise

    # ----- membership --------------------------------------------------------

    @property
    def shard_count(self):
        return len(self._addresses)

    @property
    def is_worker(self):
        return self._worker_name is not None

    def worker_id(self, shard):
        """This client's worker id on `shard` (0: not joined)."""
        with self._lock:
            return self._worker_ids[shard]

    def session(self, shard):
        """This client's session on `shard` (b"": not joined): the secret
        every request that acts as the worker carries with its id
        (ps.proto JoinResponse.session). Do not log it."""
        with self._lock:
            return self._sessions[shard]

    def _credentials(self, shard):
        with self._lock:
            return self._worker_ids[shard], self._sessions[shard]

    def join(self):
        """Joins every shard as worker_name (replacing a live worker of that
        name) and starts the heartbeats. FAILED_PRECONDITION when a shard
        reports another index or shard count than its place in `addresses`."""
        if not self.is_worker:
            raise Error(grpc.StatusCode.FAILED_PRECONDITION, "an evaluator cannot join")
        self._parallel(range(self.shard_count), self._join_shard)
        self._start_heartbeats()

    def leave(self):
        """Stops the heartbeats and ends the leases on every joined shard (one
        attempt each; a shard that no longer knows this worker, e.g. after a
        restart, counts as done; a replicated shard's other member gets a second
        attempt). Later pushes are FAILED_PRECONDITION; pulls
        are made as an evaluator. Idempotent; raises the first shard's error,
        if any."""
        self._stop_heartbeats.set()
        thread = self._heartbeat_thread
        if thread is not None and thread is not threading.current_thread():
            thread.join()
        with self._lock:
            ids = list(self._worker_ids)
            sessions = list(self._sessions)
            self._worker_ids = [0] * self.shard_count
            self._sessions = [b""] * self.shard_count
        joined = [s for s in range(self.shard_count) if ids[s]]

        def leave_shard(s):
            members = self._members[s]
            for attempt in range(len(members)):  # one attempt per member
                member = members.current()
                try:
                    members.stub.Leave(
                        ps_pb2.LeaveRequest(worker_id=ids[s], session=sessions[s]),
                        timeout=self._timeout)
                    return
                except grpc.RpcError as error:
                    # Unknown or expired (e.g. the shard restarted): already gone.
                    if error.code() == grpc.StatusCode.FAILED_PRECONDITION:
                        return
                    if error.code() in _rpc.TRANSIENT_CODES and attempt + 1 < len(members):
                        members.move_on(member)
                        continue
                    raise Error.from_rpc_error(error, s, self._addresses[s]) from None

        self._parallel(joined, leave_shard)

    def close(self):
        """Leaves (errors ignored) and closes the channels. Idempotent."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            pool = self._async_pool
        if pool is not None:
            pool.shutdown(wait=True)  # asynchronous pushes finish before leaving
        try:
            self.leave()
        except Error as error:
            _LOG.info("dcasgd: leave at close failed: %s", error)
        self._release()

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.close()

    # ----- tensors -----------------------------------------------------------

    def declare(self, specs):
        """Declares `specs` (dcasgd.TensorSpec or ps_pb2.TensorSpec) on every
        shard and remembers their layout. Idempotent for identical specs;
        ALREADY_EXISTS for a name declared with another spec; INVALID_ARGUMENT
        for a bad spec. Returns the specs as registered (chunk_elements
        resolved), in request order."""
        request = ps_pb2.DeclareTensorsRequest(tensors=[specs_lib.to_proto(s) for s in specs])
        responses = self._parallel(
            range(self.shard_count),
            lambda s: self._call(s, lambda: self._stubs[s].DeclareTensors(
                request, timeout=self._timeout)))
        registered = list(responses[0].tensors)
        self._remember(registered)
        return registered

    def fetch_specs(self):
        """Learns the layout of every declared tensor from the shards' status
        (for clients that did not declare, e.g. evaluators)."""
        for status in self.status():
            self._remember([t.spec for t in status.tensors])

    def layout(self, name):
        """The Layout of a known tensor, or None."""
        with self._lock:
            return self._layouts.get(name)

    def pull(self, names=None):
        """The current values of `names` (None or empty: every known tensor)
        as {name: np.ndarray(float32, the declared shape)}. A worker's pull
        records its backup on the shards."""
        layouts = self._layouts_for(names)
        out = {layout.name: np.empty(layout.num_elements, dtype=np.float32)
               for layout in layouts}
        plan = self._plan(layouts)

        def pull_shard(s):
            def attempt():
                worker_id, session = self._credentials(s)
                request = ps_pb2.PullRequest(worker_id=worker_id, session=session,
                                             tensors=[layout.name for layout, _ in plan[s]],
                                             wire_dtype=self._wire_dtype)
                self._receive(s, plan[s], out,
                              self._stubs[s].Pull(request, timeout=self._timeout))

            self._call_as_worker(s, attempt, retry_after_rejoin=True)

        self._parallel(sorted(plan), pull_shard)
        return {layout.name: out[layout.name].reshape(layout.shape) for layout in layouts}

    def next_step(self):
        """Reserves the next push step (ps.proto PushRequest.step). Pass it to
        push/pushpull, and again when that push fails, to push the batch again
        without any shard applying it twice. Use reserved steps in order."""
        with self._lock:
            self._last_step += 1
            return self._last_step

    def _use_step(self, step):
        if step is None or step == 0:
            return self.next_step()
        with self._lock:
            # Later next_step() calls stay above a step the caller chose.
            self._last_step = max(self._last_step, step)
        return step

    def push(self, gradients, step=None):
        """Pushes full gradients {name: array of the tensor's size}; each
        shard applies its part as one update. `step`: see next_step() (None:
        a new one). Returns a PushResult."""
        layouts, flats = self._prepare_push(gradients)
        plan = self._plan(layouts)
        versions = [0] * self.shard_count
        staleness = [0] * self.shard_count

        with self._push_lock:
            step = self._use_step(step)

            def push_shard(s):
                def attempt():
                    return self._stubs[s].Push(self._push_requests(s, plan[s], flats, step),
                                               timeout=self._timeout)

                response = self._call_as_worker(s, attempt, retry_after_rejoin=False)
                versions[s] = response.version
                staleness[s] = response.staleness

            self._parallel(sorted(plan), push_shard)
        return PushResult(versions, staleness, step)

    def push_async(self, gradients, step=None):
        """push() in the background, like ps-lite's ticket and Wait: returns a
        concurrent.futures.Future whose result() is push()'s PushResult (or
        raises its Error). The step is reserved now and the gradients copied
        before this returns; asynchronous pushes run one at a time, in the
        order they were started, so steps reach each shard in order."""
        return self._submit_async(self.push, gradients, step)

    def pushpull_async(self, gradients, step=None):
        """pushpull() in the background: a Future whose result() is the pair
        (weights, PushResult). A worker computes its next gradient meanwhile.
        Ordering and copies as push_async()."""
        return self._submit_async(self._pushpull, gradients, step)

    def _submit_async(self, fn, gradients, step):
        copied = {name: np.array(value, dtype=np.float32, copy=True)
                  for name, value in gradients.items()}
        step = self._use_step(step)
        with self._lock:
            if self._closed:
                raise Error(grpc.StatusCode.FAILED_PRECONDITION, "the client is closed")
            if self._async_pool is None:
                self._async_pool = concurrent.futures.ThreadPoolExecutor(
                    max_workers=1, thread_name_prefix="dcasgd-push")
            return self._async_pool.submit(fn, copied, step)

    def pushpull(self, gradients, step=None):
        """Push of `gradients` fused with a pull of the same tensors: returns
        {name: updated np.ndarray}, which the shards keep as this worker's
        backup. `step`: see next_step() (None: a new one). The shards'
        versions and staleness of this push are in `self.last_pushpull` (a
        PushResult) afterwards."""
        weights, self.last_pushpull = self._pushpull(gradients, step)
        return weights

    def _pushpull(self, gradients, step):
        layouts, flats = self._prepare_push(gradients)
        plan = self._plan(layouts)
        out = {layout.name: np.empty(layout.num_elements, dtype=np.float32)
               for layout in layouts}

        versions = [0] * self.shard_count
        staleness = [0] * self.shard_count

        with self._push_lock:
            step = self._use_step(step)

            def pushpull_shard(s):
                def attempt():
                    responses = self._stubs[s].PushPull(
                        self._push_requests(s, plan[s], flats, step), timeout=self._timeout)
                    versions[s], staleness[s] = self._receive(s, plan[s], out, responses)

                self._call_as_worker(s, attempt, retry_after_rejoin=False)

            self._parallel(sorted(plan), pushpull_shard)
        weights = {layout.name: out[layout.name].reshape(layout.shape) for layout in layouts}
        return weights, PushResult(versions, staleness, step)

    def status(self):
        """GetStatus of every shard (ps_pb2.ShardStatus), in shard order."""
        request = ps_pb2.GetStatusRequest()
        return self._parallel(
            range(self.shard_count),
            lambda s: self._call(s, lambda: self._stubs[s].GetStatus(request,
                                                                     timeout=self._timeout)))

    def checkpoint(self):
        """Makes every shard write a checkpoint now; their answers in order."""
        request = ps_pb2.CheckpointRequest()
        return self._parallel(
            range(self.shard_count),
            lambda s: self._call(s, lambda: self._stubs[s].Checkpoint(request,
                                                                      timeout=self._timeout)))

    def stub(self, shard):
        """The raw ps_pb2_grpc.ParameterShardStub of `shard` (for tools and
        tests that need a request the client would not send)."""
        return self._stubs[shard]

    # ----- internals ---------------------------------------------------------

    def _release(self):
        if self._async_pool is not None:
            self._async_pool.shutdown(wait=True)  # pushes started still finish
        self._stop_heartbeats.set()
        self._pool.shutdown(wait=True)
        for members in self._members:
            members.close()

    def _call(self, s, attempt):
        return _rpc.call(attempt, self._policy, s, self._addresses[s],
                         members=self._members[s])

    def _call_as_worker(self, s, attempt, retry_after_rejoin):
        """_call, plus the FAILED_PRECONDITION policy of the class comment."""
        try:
            return self._call(s, attempt)
        except Error as error:
            if error.code != grpc.StatusCode.FAILED_PRECONDITION or not self.is_worker:
                raise
            with self._lock:
                left = self._worker_ids[s] == 0 and self._stop_heartbeats.is_set()
            if left:
                raise
            self._join_shard(s)
            if retry_after_rejoin:
                return self._call(s, attempt)
            raise Error(error.code, error.message + "; re-joined; pull again", s,
                        self._addresses[s]) from None

    def _join_shard(self, s):
        response = self._call(s, lambda: self._stubs[s].Join(
            ps_pb2.JoinRequest(worker_name=self._worker_name), timeout=self._timeout))
        if response.shard_index != s or response.shard_count != self.shard_count:
            raise Error(grpc.StatusCode.FAILED_PRECONDITION,
                        "shard reports index %d of %d, expected %d of %d: check the address "
                        "order" % (response.shard_index, response.shard_count, s,
                                   self.shard_count), s, self._addresses[s])
        with self._lock:
            self._worker_ids[s] = response.worker_id
            self._sessions[s] = response.session
            self._lease_ms[s] = response.lease_ms

    def _start_heartbeats(self):
        if not self._heartbeats:
            return
        with self._lock:
            if self._heartbeat_thread is not None and self._heartbeat_thread.is_alive():
                return
            self._stop_heartbeats.clear()
            self._heartbeat_thread = threading.Thread(target=self._heartbeat_loop,
                                                      name="dcasgd-heartbeat", daemon=True)
            self._heartbeat_thread.start()

    def _heartbeat_interval(self):
        with self._lock:
            leases = [ms for ms in self._lease_ms if ms > 0]
        return max(0.01, min(leases) / 3000.0) if leases else 1.0

    def _heartbeat_loop(self):
        while not self._stop_heartbeats.wait(self._heartbeat_interval()):
            for s in range(self.shard_count):
                worker_id, session = self._credentials(s)
                if worker_id == 0 or self._stop_heartbeats.is_set():
                    continue
                member = self._members[s].current()
                try:
                    response = self._stubs[s].Heartbeat(
                        ps_pb2.HeartbeatRequest(worker_id=worker_id, session=session),
                        timeout=self._heartbeat_interval())
                    with self._lock:
                        self._lease_ms[s] = response.lease_ms
                except grpc.RpcError as error:
                    if error.code() != grpc.StatusCode.FAILED_PRECONDITION:
                        _LOG.info("dcasgd: heartbeat to shard %d failed: %s", s, error.code())
                        if error.code() in _rpc.TRANSIENT_CODES:
                            self._members[s].move_on(member)  # the next beat tries the other
                        continue
                    # The lease expired: the backups are gone, so the next
                    # push fails and the caller pulls again.
                    _LOG.warning("dcasgd: lease on shard %d lost; re-joining", s)
                    try:
                        self._join_shard(s)
                    except Error as join_error:
                        _LOG.warning("dcasgd: re-join of shard %d failed: %s", s, join_error)

    def _parallel(self, shards, fn):
        """[fn(s) for s in shards], run in parallel; raises the first error in
        shard order after all have finished."""
        shards = list(shards)
        if len(shards) == 1:
            return [fn(shards[0])]
        futures = [self._pool.submit(fn, s) for s in shards]
        concurrent.futures.wait(futures)
        for future in futures:
            error = future.exception()
            if error is not None:
                raise error
        return [future.result() for future in futures]

    def _remember(self, proto_specs):
        with self._lock:
            for spec in proto_specs:
                self._layouts[spec.name] = Layout(spec.name, spec.shape, spec.chunk_elements)

    def _layouts_for(self, names):
        """Layouts of `names` (None/empty: all known), fetching the specs once
        when some are unknown; NOT_FOUND when still unknown."""
        with self._lock:
            known = dict(self._layouts)
        if not names:
            if not known:
                self.fetch_specs()
                with self._lock:
                    known = dict(self._layouts)
            return [known[n] for n in sorted(known)]
        if isinstance(names, str):
            raise TypeError("names must be a list of tensor names, not a str")
        if any(n not in known for n in names):
            self.fetch_specs()
            with self._lock:
                known = dict(self._layouts)
        missing = [n for n in names if n not in known]
        if missing:
            raise Error(grpc.StatusCode.NOT_FOUND,
                        "unknown tensor(s) %s: declare them first" % ", ".join(map(repr, missing)))
        return [known[n] for n in names]

    def _plan(self, layouts):
        """{shard: [(layout, chunk indices owned by the shard)]} for the shards
        owning at least one chunk of `layouts`."""
        plan = {}
        for layout in layouts:
            owners = layout.chunk_shards(self.shard_count)
            for s in np.unique(owners):
                plan.setdefault(int(s), []).append((layout, np.nonzero(owners == s)[0]))
        return plan

    def _prepare_push(self, gradients):
        if not self.is_worker:
            raise Error(grpc.StatusCode.FAILED_PRECONDITION, "an evaluator cannot push")
        with self._lock:
            joined = all(self._worker_ids)
        if not joined:
            raise Error(grpc.StatusCode.FAILED_PRECONDITION,
                        "not joined to every shard (left, or never joined): join() and pull "
                        "again")
        layouts = self._layouts_for(list(gradients))
        flats = {}
        for layout in layouts:
            flat = np.ascontiguousarray(gradients[layout.name], dtype=_FLOAT32_LE).reshape(-1)
            if flat.size != layout.num_elements:
                raise Error(grpc.StatusCode.INVALID_ARGUMENT,
                            "tensor %r: gradient has %d elements, expected %d (shape %s)" %
                            (layout.name, flat.size, layout.num_elements, list(layout.shape)))
            flats[layout.name] = flat
        return layouts, flats

    def _push_requests(self, s, shard_plan, flats, step):
        """The request stream of one Push/PushPull to shard `s`: the worker id,
        its session, the push step and the number of chunks go in the first
        message (the
        shard applies the push only when exactly that many arrive and the
        stream ends normally, and a repeated step only once)."""
        worker_id, session = self._credentials(s)
        chunk_count = sum(len(indices) for _, indices in shard_plan)
        first = True
        for layout, chunk_indices in shard_plan:
            flat = flats[layout.name]
            for index in chunk_indices:
                offset, length = layout.chunk_range(int(index))
                request = ps_pb2.PushRequest(gradient=ps_pb2.Chunk(
                    tensor=layout.name, chunk_index=int(index), dtype=self._wire_dtype,
                    values=wire.encode(flat[offset:offset + length], self._wire_dtype)))
                if first:
                    request.worker_id = worker_id
                    request.session = session
                    request.chunk_count = chunk_count
                    request.step = step
                    request.wire_dtype = self._wire_dtype
                    first = False
                yield request

    def _receive(self, s, shard_plan, out, responses):
        """Copies the chunks of a Pull/PushPull response stream into `out`,
        checking that exactly the planned chunks arrive with their lengths."""
        expected = {layout.name: (layout, set(int(i) for i in indices))
                    for layout, indices in shard_plan}
        last = None
        for response in responses:
            chunk = response.chunk
            entry = expected.get(chunk.tensor)
            if entry is None or chunk.chunk_index not in entry[1]:
                raise Error(grpc.StatusCode.INTERNAL,
                            "unexpected chunk %d of tensor %r" % (chunk.chunk_index, chunk.tensor),
                            s, self._addresses[s])
            layout, pending = entry
            offset, length = layout.chunk_range(chunk.chunk_index)
            if chunk.dtype not in wire.DTYPES.values():
                raise Error(grpc.StatusCode.INTERNAL,
                            "chunk %d of tensor %r has unknown dtype %d" %
                            (chunk.chunk_index, chunk.tensor, chunk.dtype), s,
                            self._addresses[s])
            size = wire.element_bytes(chunk.dtype) * length
            if len(chunk.values) != size:
                raise Error(grpc.StatusCode.INTERNAL,
                            "chunk %d of tensor %r has %d bytes, expected %d" %
                            (chunk.chunk_index, chunk.tensor, len(chunk.values), size), s,
                            self._addresses[s])
            # Decoded by the chunk's own dtype (the one asked for).
            out[layout.name][offset:offset + length] = wire.decode(chunk.values, chunk.dtype)
            pending.discard(chunk.chunk_index)
            last = response
        missing = sum(len(pending) for _, pending in expected.values())
        if missing:
            raise Error(grpc.StatusCode.INTERNAL, "%d chunk(s) missing from the response" % missing,
                        s, self._addresses[s])
        # (version, staleness) of the stream's messages; staleness is set in
        # PushPull replies only.
        return (last.version, last.staleness) if last is not None else (0, 0)


class _CurrentStubs:
    """stubs[s]: the stub of shard s's current member (_rpc.Members)."""

    def __init__(self, members):
        self._members = members

    def __getitem__(self, s):
        return self._members[s].stub

    def __len__(self):
        return len(self._members)
