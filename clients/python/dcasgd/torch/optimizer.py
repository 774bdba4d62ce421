"""ShardOptimizer: a torch.nn.Module's parameters live on the dcasgd shards."""

from __future__ import annotations

import logging
import time
from typing import Callable, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import grpc
import numpy as np
import torch

import dcasgd
from dcasgd.errors import Error

_LOG = logging.getLogger("dcasgd")

# Errors after which a batch is pushed again (after a pull), as the C++
# worker does: a shard restarting or unreachable beyond the client's own
# retries (UNAVAILABLE, CANCELLED, DEADLINE_EXCEEDED), a lost lease or backup
# (FAILED_PRECONDITION; the client re-joined), a too-stale gradient
# (ABORTED), a shard restarted without the model (NOT_FOUND: declared again).
RETRY_CODES = frozenset([
    grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED, grpc.StatusCode.DEADLINE_EXCEEDED,
    grpc.StatusCode.FAILED_PRECONDITION, grpc.StatusCode.ABORTED, grpc.StatusCode.NOT_FOUND,
])

# Explicit initial values travel in one DeclareTensors message per tensor;
# the shards accept messages up to --max_message_bytes (16 MiB by default).
DEFAULT_MAX_INIT_BYTES = 12 << 20

Names = Union[None, Mapping[str, str], Callable[[str], str]]


class ShardOptimizer:
    """Trains `module` through the parameter shards of a job, like a
    torch.optim optimizer whose update rule runs on the shards.

    Construction declares every parameter of `module` that requires a
    gradient (named_parameters() order) on the shards, with the module's
    current values as explicit initial values (so the job starts from the
    module's initialisation, bit for bit), then pulls the job's weights into
    the module. When the tensors already exist (another worker, Python or
    C++, declared them first) the job's weights win: their shapes must match
    the module's (ValueError naming the tensor otherwise).

    step() pushes every parameter's .grad (zeros where it is None) as one
    PushPull with a fresh push step and copies the weights the shards return
    into the parameters: they are this worker's backup on the shards, so the
    next gradient is computed exactly on what DC-ASGD compensates against.
    Nothing else of the module is shared: buffers (e.g. BatchNorm statistics)
    and parameters with requires_grad=False stay local to each worker.

    Arguments:
      module: a torch.nn.Module with float32 parameters (any device; values
        move through host memory).
      client: a dcasgd.Client joined as a worker (worker_name set), or the
        shard addresses (a list, or "h0:7000,h1:7000"): then worker_name is
        required and the optimizer owns (and close() closes) the client.
      names: tensor name of each parameter: a dict {parameter name: tensor
        name} or a function of the parameter name; default: the
        module's `dcasgd_tensor_names` dict if it has one, else the parameter
        name itself (e.g. "conv1.weight"). Names must be unique in the job.
      initializers: {parameter name: dcasgd initialiser (dcasgd.normal(...),
        ...)} to declare instead of the module's values: needed for tensors
        whose values exceed max_init_bytes (one message carries them).
      chunk_elements: chunk size of the declared tensors (0: the shards'
        default, 65536).
      max_attempts: pushes of one batch before it is dropped (see step()).

    Errors: dcasgd.Error for what the shards refuse (its .code is a
    grpc.StatusCode; see docs/api.md); a gradient with NaN or Inf is refused
    here (INVALID_ARGUMENT naming the tensor) before anything is sent.
    Not thread-safe: one training loop per optimizer.
    """

    def __init__(self, module: torch.nn.Module, client, *, worker_name: Optional[str] = None,
                 names: Names = None, initializers: Optional[Mapping[str, object]] = None,
                 chunk_elements: int = 0, max_attempts: int = 10,
                 max_init_bytes: int = DEFAULT_MAX_INIT_BYTES, pull_timeout: float = 300.0):
        if max_attempts < 1:
            raise ValueError("max_attempts must be >= 1")
        self.module = module
        self._owns_client = not isinstance(client, dcasgd.Client)
        if self._owns_client:
            addresses = client.split(",") if isinstance(client, str) else list(client)
            if not worker_name:
                raise ValueError("worker_name is required when ShardOptimizer makes the client")
            client = dcasgd.Client([a for a in addresses if a], worker_name=worker_name)
        elif not client.is_worker:
            raise ValueError("the dcasgd.Client must be a worker (worker_name set), not an "
                             "evaluator")
        self.client: dcasgd.Client = client
        self.max_attempts = max_attempts
        self.pull_timeout = pull_timeout
        # Counters of this optimizer's life.
        self.steps = 0  # batches whose push was applied
        self.dropped_batches = 0  # batches given up (see step())
        self.last_result: Optional[dcasgd.PushResult] = None

        self._params: List[Tuple[str, torch.nn.Parameter]] = []
        tensor_names = _resolve_names(module, names)
        seen: Dict[str, str] = {}
        for param_name, param in module.named_parameters():
            if not param.requires_grad:
                continue
            if param.dtype != torch.float32:
                raise TypeError("parameter %r is %s: dcasgd tensors are float32 (call "
                                "module.float())" % (param_name, param.dtype))
            tensor = tensor_names(param_name)
            if not isinstance(tensor, str) or not tensor:
                raise ValueError("parameter %r has no tensor name" % param_name)
            if tensor in seen:
                raise ValueError("parameters %r and %r map to the same tensor %r" %
                                 (seen[tensor], param_name, tensor))
            seen[tensor] = param_name
            self._params.append((tensor, param))
        if not self._params:
            raise ValueError("the module has no parameters that require a gradient")
        self._initializers = dict(initializers or {})
        unknown = set(self._initializers) - {seen[t] for t, _ in self._params}
        if unknown:
            raise ValueError("initializers for unknown parameters: %s" % sorted(unknown))
        self._chunk_elements = int(chunk_elements)
        self._max_init_bytes = int(max_init_bytes)
        self._param_names = {t: seen[t] for t, _ in self._params}
        try:
            self.declare()
            self.pull()
        except BaseException:
            self.close()
            raise

    # ----- the torch.optim-like interface -------------------------------------

    @property
    def tensor_names(self) -> List[str]:
        """The tensor names on the shards, in parameter order."""
        return [t for t, _ in self._params]

    def zero_grad(self, set_to_none: bool = True) -> None:
        """Clears the gradients of the managed parameters."""
        for _, param in self._params:
            if param.grad is None:
                continue
            if set_to_none:
                param.grad = None
            else:
                param.grad.detach_()
                param.grad.zero_()

    def step(self, closure: Optional[Callable[[], torch.Tensor]] = None):
        """Pushes the gradients of one batch and loads the updated weights.

        With a closure (which zeroes the gradients, computes the loss, calls
        backward() and returns the loss, as for torch.optim.LBFGS) it is
        called first, and again after a failed push: after the errors of
        RETRY_CODES the optimizer pulls the current weights, recomputes the
        gradient with the closure and pushes the batch again with the same
        push step, so no shard applies it twice (at most max_attempts pushes,
        then the batch is dropped). Without a closure the gradient cannot be
        recomputed: after such an error the weights are pulled and the batch
        is dropped (counted in dropped_batches). Returns the closure's loss
        (or None); the shards' versions and staleness of the push are in
        last_result (a dcasgd.PushResult).
        """
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        push_step = self.client.next_step()
        for attempt in range(1, self.max_attempts + 1):
            gradients = self._gradients()
            try:
                weights = self.client.pushpull(gradients, step=push_step)
            except Error as error:
                if error.code not in RETRY_CODES:
                    raise
                _LOG.info("dcasgd.torch: push of step %d failed (%s); pulling again", push_step,
                          error)
                self.pull()
                if closure is None or attempt == self.max_attempts:
                    self.dropped_batches += 1
                    _LOG.warning("dcasgd.torch: dropped a batch after %d push(es): %s", attempt,
                                 error)
                    return loss
                with torch.enable_grad():
                    loss = closure()
                continue
            self._load(weights)
            self.last_result = self.client.last_pushpull
            self.steps += 1
            return loss
        return loss  # not reached: the last attempt returns above

    def pull(self) -> None:
        """Loads the job's current weights into the module (a worker's pull:
        it becomes this worker's backup). Retries the errors of RETRY_CODES
        (re-declaring after NOT_FOUND: a shard restarted without its
        tensors) for up to pull_timeout seconds, then raises."""
        deadline = time.monotonic() + self.pull_timeout
        delay = 0.1
        while True:
            try:
                weights = self.client.pull(self.tensor_names)
                break
            except Error as error:
                if error.code not in RETRY_CODES or time.monotonic() > deadline:
                    raise
                if error.code == grpc.StatusCode.NOT_FOUND:
                    self._declare_ignoring_errors()
                _LOG.info("dcasgd.torch: pull failed, retrying: %s", error)
                time.sleep(delay)
                delay = min(1.0, delay * 2)
        self._load(weights)

    def declare(self) -> None:
        """Declares the tensors (see the class comment). Called by the
        constructor; idempotent."""
        existing = []
        for tensor, param in self._params:
            spec = self._spec(tensor, param)
            try:
                self.client.declare([spec])
            except Error as error:
                if error.code != grpc.StatusCode.ALREADY_EXISTS:
                    raise
                existing.append((tensor, param))
        if existing:
            self.client.fetch_specs()
            for tensor, param in existing:
                layout = self.client.layout(tensor)
                shape = tuple(param.shape)
                if layout is None or layout.shape != shape:
                    raise ValueError(
                        "tensor %r (parameter %r) exists in the job with shape %s, the module's "
                        "is %s: another model uses that name" %
                        (tensor, self._param_names[tensor],
                         None if layout is None else list(layout.shape), list(shape)))
            _LOG.info("dcasgd.torch: %d of %d tensors were already declared; using the job's "
                      "weights", len(existing), len(self._params))

    def close(self) -> None:
        """Closes the client if this optimizer made it (leaves the shards)."""
        if self._owns_client:
            self.client.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.close()

    # ----- internals ---------------------------------------------------------

    def _spec(self, tensor: str, param: torch.nn.Parameter) -> dcasgd.TensorSpec:
        init = self._initializers.get(self._param_names[tensor])
        if init is None:
            nbytes = 4 * param.numel()
            if nbytes > self._max_init_bytes:
                raise ValueError(
                    "parameter %r has %d bytes of initial values, above max_init_bytes=%d (one "
                    "message carries them): pass initializers={%r: dcasgd.normal(0, std, seed)} "
                    "(or raise the shards' --max_message_bytes and max_init_bytes)" %
                    (self._param_names[tensor], nbytes, self._max_init_bytes,
                     self._param_names[tensor]))
            init = dcasgd.values(param.detach().to("cpu").numpy())
        return dcasgd.TensorSpec(tensor, tuple(param.shape), chunk_elements=self._chunk_elements,
                                 init=init)

    def _declare_ignoring_errors(self):
        try:
            self.declare()
        except (Error, ValueError) as error:
            _LOG.info("dcasgd.torch: declaring again failed: %s", error)

    def _gradients(self) -> Dict[str, np.ndarray]:
        out = {}
        for tensor, param in self._params:
            grad = param.grad
            if grad is None:
                out[tensor] = np.zeros(tuple(param.shape), dtype=np.float32)
                continue
            if grad.is_sparse:
                grad = grad.to_dense()
            array = grad.detach().to("cpu", torch.float32).contiguous().numpy()
            if not np.isfinite(array).all():
                raise Error(grpc.StatusCode.INVALID_ARGUMENT,
                            "the gradient of tensor %r (parameter %r) has NaN or Inf elements: "
                            "the loss diverged (lower the shards' --lr); nothing was pushed" %
                            (tensor, self._param_names[tensor]))
            out[tensor] = array
        return out

    def _load(self, weights: Mapping[str, np.ndarray]) -> None:
        with torch.no_grad():
            for tensor, param in self._params:
                param.copy_(torch.from_numpy(weights[tensor]).reshape(param.shape))


def _resolve_names(module: torch.nn.Module, names: Names) -> Callable[[str], str]:
    if names is None:
        names = getattr(module, "dcasgd_tensor_names", None)
    if names is None:
        return lambda name: name
    if callable(names):
        return names
    mapping = dict(names)

    def lookup(name: str) -> str:
        if name not in mapping:
            raise ValueError("no tensor name for parameter %r in `names`" % name)
        return mapping[name]

    return lookup


def parameter_specs(module: torch.nn.Module, names: Names = None) -> Sequence[dcasgd.TensorSpec]:
    """The TensorSpecs ShardOptimizer would declare for `module` (explicit
    initial values), for tools that declare without training."""
    tensor_names = _resolve_names(module, names)
    return [dcasgd.TensorSpec(tensor_names(n), tuple(p.shape),
                              init=dcasgd.values(p.detach().to("cpu").numpy()))
            for n, p in module.named_parameters() if p.requires_grad]
