"""An in-process ParameterShard for client tests that need no dcasgd-ps: plain
SGD with lr = 1 (w <- w - g) on zero- or constant-initialised tensors, with
knobs to inject UNAVAILABLE and forget workers, and a record of every chunk
it received."""

import concurrent.futures
import os
import threading

import grpc
import numpy as np

import dcasgd
from dcasgd.v1 import ps_pb2
from dcasgd.v1 import ps_pb2_grpc


class FakeShard(ps_pb2_grpc.ParameterShardServicer):
    """Shard `index` of `count`. All fields are guarded by self.lock."""

    def __init__(self, index, count, lease_ms=30000):
        self.index = index
        self.count = count
        self.lease_ms = lease_ms
        self.lock = threading.Lock()
        self.tensors = {}  # name -> (Layout, np.ndarray float32, spec)
        self.workers = {}  # worker id -> name
        self.sessions = {}  # worker id -> the session its Join returned
        self.next_worker_id = 100 * (index + 1)
        self.version = 0
        self.fail_next = 0  # calls to answer with fail_code
        self.fail_code = grpc.StatusCode.UNAVAILABLE
        self.push_steps = []  # the step of every Push/PushPull, failed ones included
        self.calls = 0  # every RPC, failed ones included
        self.joins = 0
        self.heartbeats = 0
        self.received = []  # (rpc name, tensor, chunk index)

    # Returns True when this call must fail with UNAVAILABLE.
    def _enter(self, context):
        with self.lock:
            self.calls += 1
            if self.fail_next > 0:
                self.fail_next -= 1
                fail = True
            else:
                fail = False
        if fail:
            context.abort(self.fail_code, "injected")

    def DeclareTensors(self, request, context):
        self._enter(context)
        response = ps_pb2.DeclareTensorsResponse()
        with self.lock:
            for spec in request.tensors:
                resolved = ps_pb2.TensorSpec()
                resolved.CopyFrom(spec)
                if not resolved.chunk_elements:
                    resolved.chunk_elements = dcasgd.DEFAULT_CHUNK_ELEMENTS
                layout = dcasgd.Layout(spec.name, spec.shape, resolved.chunk_elements)
                values = np.full(layout.num_elements, spec.init.constant.value, np.float32)
                self.tensors.setdefault(spec.name, (layout, values, resolved))
                response.tensors.append(resolved)
        return response

    def Join(self, request, context):
        self._enter(context)
        with self.lock:
            self.joins += 1
            worker_id = self.next_worker_id
            self.next_worker_id += 1
            self.workers[worker_id] = request.worker_name
            session = os.urandom(16)
            self.sessions[worker_id] = session
        return ps_pb2.JoinResponse(worker_id=worker_id, session=session, lease_ms=self.lease_ms,
                                   shard_index=self.index, shard_count=self.count)

    def _check_session(self, worker_id, session, context):
        """Like a real shard: a known worker's request without its session is
        UNAUTHENTICATED (unknown workers are left to the caller)."""
        with self.lock:
            expected = self.sessions.get(worker_id) if worker_id in self.workers else None
        if expected is not None and session != expected:
            context.abort(grpc.StatusCode.UNAUTHENTICATED, "session missing or wrong")

    def Heartbeat(self, request, context):
        self._enter(context)
        self._check_session(request.worker_id, request.session, context)
        with self.lock:
            known = request.worker_id in self.workers
            if known:
                self.heartbeats += 1
        if not known:
            context.abort(grpc.StatusCode.FAILED_PRECONDITION, "unknown worker")
        return ps_pb2.HeartbeatResponse(lease_ms=self.lease_ms)

    def Leave(self, request, context):
        self._enter(context)
        self._check_session(request.worker_id, request.session, context)
        with self.lock:
            self.workers.pop(request.worker_id, None)
        return ps_pb2.LeaveResponse()

    def forget_workers(self):
        with self.lock:
            self.workers.clear()

    def _owned_chunks(self, name):
        layout = self.tensors[name][0]
        return [int(i) for i in layout.chunks_of_shard(self.index, self.count)]

    def _chunk_responses(self, names):
        responses = []
        with self.lock:
            for name in names:
                layout, values, _ = self.tensors[name]
                for i in self._owned_chunks(name):
                    offset, length = layout.chunk_range(i)
                    responses.append(ps_pb2.PullResponse(
                        chunk=ps_pb2.Chunk(tensor=name, chunk_index=i,
                                           values=values[offset:offset + length].tobytes()),
                        version=self.version))
        return responses

    def Pull(self, request, context):
        self._enter(context)
        if request.worker_id:
            self._check_session(request.worker_id, request.session, context)
        with self.lock:
            unknown = [n for n in request.tensors if n not in self.tensors]
        if unknown:
            context.abort(grpc.StatusCode.NOT_FOUND, "unknown tensor")
        for response in self._chunk_responses(request.tensors):
            yield response

    def _apply(self, rpc, requests, context):
        """Applies a push stream; returns the names pushed. Like a real shard,
        it applies nothing unless the first message announces exactly the
        chunks the stream carries (chunk_count)."""
        requests = list(requests)
        if requests:
            self._check_session(requests[0].worker_id, requests[0].session, context)
        if requests and requests[0].chunk_count != len(requests):
            context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                          "chunk_count %d but %d chunks" % (requests[0].chunk_count,
                                                            len(requests)))
        with self.lock:
            if not requests or requests[0].worker_id not in self.workers:
                known = False
            else:
                known = True
                names = []
                for request in requests:
                    chunk = request.gradient
                    self.received.append((rpc, chunk.tensor, chunk.chunk_index))
                    layout, values, _ = self.tensors[chunk.tensor]
                    offset, length = layout.chunk_range(chunk.chunk_index)
                    values[offset:offset + length] -= np.frombuffer(chunk.values, "<f4")
                    if chunk.tensor not in names:
                        names.append(chunk.tensor)
                self.version += 1
        if not known:
            context.abort(grpc.StatusCode.FAILED_PRECONDITION, "unknown worker")
        return names

    def _collect(self, request_iterator):
        requests = list(request_iterator)
        with self.lock:
            self.push_steps.append(requests[0].step if requests else None)
        return requests

    def Push(self, request_iterator, context):
        requests = self._collect(request_iterator)
        self._enter(context)
        self._apply("Push", requests, context)
        with self.lock:
            return ps_pb2.PushResponse(version=self.version, staleness=0)

    def PushPull(self, request_iterator, context):
        requests = self._collect(request_iterator)
        self._enter(context)
        names = self._apply("PushPull", requests, context)
        for response in self._chunk_responses(names):
            yield response

    def GetStatus(self, request, context):
        self._enter(context)
        with self.lock:
            status = ps_pb2.ShardStatus(shard_index=self.index, shard_count=self.count,
                                        version=self.version)
            for name, (_, _, spec) in self.tensors.items():
                status.tensors.add(spec=spec, owned_chunks=len(self._owned_chunks(name)))
        return status


class FakeCluster:
    """`count` FakeShards, each on its own in-process server on loopback."""

    def __init__(self, count, lease_ms=30000):
        self.shards = [FakeShard(i, count, lease_ms) for i in range(count)]
        self.servers = []
        self.addresses = []
        for shard in self.shards:
            server = grpc.server(concurrent.futures.ThreadPoolExecutor(max_workers=4))
            ps_pb2_grpc.add_ParameterShardServicer_to_server(shard, server)
            port = server.add_insecure_port("127.0.0.1:0")
            server.start()
            self.servers.append(server)
            self.addresses.append("127.0.0.1:%d" % port)

    def stop(self):
        for server in self.servers:
            server.stop(grace=None)

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.stop()
