#!/usr/bin/python3
"""Softmax regression on Fashion-MNIST as a dcasgd worker, in numpy.

Joins the parameter shards, declares the model's tensors (by default
"softmax/w" [784, 10] and "softmax/b" [10], the names the C++ workers use for
softmax regression), then loops: compute the mean cross-entropy gradient of a
minibatch at the current weights, PushPull it, continue from the weights the
shards return. The update rule (ASGD, DC-ASGD, ...) and learning rate are the
shards' configuration.

Data: the gzip'd IDX files in --data_dir (Debian: dataset-fashion-mnist).
With --coordinator, data shards (contiguous slices of the training set) are
leased from the DataCoordinator service on shard 0 (or the given address), so
that several workers cover every slice once per epoch; otherwise the worker
goes through the whole training set --epochs times by itself.

At the end the test-set accuracy is printed as "test_accuracy=0.xxxx".

  /usr/bin/python3 examples/python/train_fashion_mnist.py \\
      --shards=127.0.0.1:7000,127.0.0.1:7001 --epochs=1

Needs PYTHONPATH with clients/python (see docs/api.md).
"""

import argparse
import gzip
import os
import socket
import sys
import time

import grpc
import numpy as np

import dcasgd

NUM_CLASSES = 10


def read_idx(path):
    """An IDX file (optionally gzip'd) as a numpy array of uint8."""
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rb") as f:
        data = f.read()
    magic = int.from_bytes(data[0:4], "big")
    if magic >> 8 != 0x08:
        raise ValueError("%s: not an IDX file of unsigned bytes (magic 0x%x)" % (path, magic))
    dims = magic & 0xFF
    shape = tuple(int(d) for d in np.frombuffer(data, dtype=">u4", count=dims, offset=4))
    values = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * dims)
    if values.size != int(np.prod(shape)):
        raise ValueError("%s: %d values for shape %s" % (path, values.size, shape))
    return values.reshape(shape)


def load_split(data_dir, prefix, limit=None):
    """(features float32 [n, 784] in [0, 1], labels int64 [n])."""
    images = read_idx(os.path.join(data_dir, prefix + "-images-idx3-ubyte.gz"))
    labels = read_idx(os.path.join(data_dir, prefix + "-labels-idx1-ubyte.gz"))
    if limit:
        images, labels = images[:limit], labels[:limit]
    features = images.reshape(images.shape[0], -1).astype(np.float32) / 255.0
    return features, labels.astype(np.int64)


def softmax_gradient(w, b, x, y):
    """Mean cross-entropy gradient (dw, db) and loss of softmax(x w + b)."""
    logits = x @ w + b
    logits -= logits.max(axis=1, keepdims=True)
    p = np.exp(logits)
    p /= p.sum(axis=1, keepdims=True)
    loss = -np.mean(np.log(p[np.arange(len(y)), y] + 1e-12))
    p[np.arange(len(y)), y] -= 1.0
    p /= len(y)
    return (x.T @ p).astype(np.float32), p.sum(axis=0).astype(np.float32), float(loss)


def accuracy(w, b, x, y):
    return float(np.mean(np.argmax(x @ w + b, axis=1) == y))


# Errors after which a batch is pushed again (after a pull): a lost lease
# (the client re-joined), a too-stale gradient, a shard still unreachable
# after the client's own retries.
RETRY_BATCH = (grpc.StatusCode.FAILED_PRECONDITION, grpc.StatusCode.ABORTED,
               grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED,
               grpc.StatusCode.DEADLINE_EXCEEDED)


class Trainer:
    """Minibatch loop against the shards; recovers from lost leases, stale
    gradients and shard restarts by pulling again and pushing the batch again
    with the same push step (so no shard applies it twice)."""

    def __init__(self, client, args):
        self.client = client
        self.args = args
        self.names = (args.weights_name, args.bias_name)
        self.client_name = args.worker_name
        self.weights = None
        self.steps = 0
        self.last_loss = float("nan")

    def pull(self, attempts=60):
        for attempt in range(attempts):
            try:
                self.weights = self.client.pull(list(self.names))
                return
            except dcasgd.Error as error:
                if error.code not in RETRY_BATCH or attempt + 1 == attempts:
                    raise
                time.sleep(1.0)

    def train_on(self, x, y, rng, keep_alive=None):
        order = rng.permutation(len(y))
        for start in range(0, len(order), self.args.batch_size):
            batch = order[start:start + self.args.batch_size]
            step = self.client.next_step()
            for attempt in range(10):
                w, b = self.weights[self.names[0]], self.weights[self.names[1]]
                dw, db, self.last_loss = softmax_gradient(w, b, x[batch], y[batch])
                try:
                    self.weights = self.client.pushpull({self.names[0]: dw, self.names[1]: db},
                                                        step=step)
                    break
                except dcasgd.Error as error:
                    if error.code not in RETRY_BATCH:
                        raise
                    self.pull()  # and push the batch again, same step
            self.steps += 1
            if keep_alive is not None:
                keep_alive()
            if self.args.log_every and self.steps % self.args.log_every == 0:
                print("step %d loss %.4f" % (self.steps, self.last_loss), flush=True)


def declare(client, args):
    """Declares the model; when another worker declared it with another
    initialiser (ALREADY_EXISTS), uses the declared tensors if their shapes
    fit."""
    specs = [dcasgd.TensorSpec(args.weights_name, (784, NUM_CLASSES),
                               init=dcasgd.normal(0.0, 0.01, seed=args.seed)),
             dcasgd.TensorSpec(args.bias_name, (NUM_CLASSES,))]
    try:
        client.declare(specs)
    except dcasgd.Error as error:
        if error.code != grpc.StatusCode.ALREADY_EXISTS:
            raise
        client.fetch_specs()
    for spec in specs:
        layout = client.layout(spec.name)
        if layout is None or layout.shape != tuple(spec.shape):
            raise SystemExit("tensor %r is declared with shape %s, expected %s" %
                             (spec.name, None if layout is None else layout.shape, spec.shape))


def train_with_coordinator(trainer, x, y, args, address):
    bounds = np.linspace(0, len(y), args.num_data_shards + 1).astype(np.int64)
    with dcasgd.DataCoordinatorClient(address) as coordinator:
        while True:
            response = coordinator.acquire(trainer.client_name, args.num_data_shards,
                                           args.epochs)
            kind = response.WhichOneof("result")
            if kind == "job_done":
                return
            if kind == "retry_after_ms":
                time.sleep(response.retry_after_ms / 1000.0)
                continue
            lease = response.lease
            renew_every = lease.lease_ms / 3000.0
            renewed = [time.monotonic()]

            def keep_alive(lease=lease, renew_every=renew_every, renewed=renewed):
                if time.monotonic() - renewed[0] > renew_every:
                    coordinator.renew(lease)
                    renewed[0] = time.monotonic()

            lo, hi = bounds[lease.data_shard], bounds[lease.data_shard + 1]
            rng = np.random.default_rng([args.seed, lease.epoch, lease.data_shard])
            trainer.train_on(x[lo:hi], y[lo:hi], rng, keep_alive)
            try:
                coordinator.complete(lease)
            except dcasgd.Error as error:
                # The lease expired and the shard went to someone else: the
                # gradients were applied anyway; the epoch stays exact.
                if error.code != grpc.StatusCode.FAILED_PRECONDITION:
                    raise


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shards", required=True,
                        help="comma-separated host:port of every shard, in shard order")
    parser.add_argument("--worker_name", default="%s-py-%d" % (socket.gethostname(), os.getpid()))
    parser.add_argument("--data_dir", default="/usr/share/datasets/fashion-mnist")
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--batch_size", type=int, default=64)
    parser.add_argument("--train_limit", type=int, default=0,
                        help="use only the first N training examples (0: all)")
    parser.add_argument("--coordinator", nargs="?", const="", default=None,
                        help="lease data shards from the DataCoordinator (default address: "
                        "shard 0)")
    parser.add_argument("--num_data_shards", type=int, default=10)
    parser.add_argument("--weights_name", default="softmax/w")
    parser.add_argument("--bias_name", default="softmax/b")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--log_every", type=int, default=0)
    parser.add_argument("--wire_dtype", default="float32", choices=["float32", "bfloat16", "float16"],
                        help="what gradients and weights travel as (dcasgd.Client wire_dtype)")
    return parser.parse_args(argv)


def main(argv):
    args = parse_args(argv)
    addresses = [a for a in args.shards.split(",") if a]
    x_train, y_train = load_split(args.data_dir, "train", args.train_limit)
    x_test, y_test = load_split(args.data_dir, "t10k")
    with dcasgd.Client(addresses, args.worker_name, wire_dtype=args.wire_dtype) as client:
        declare(client, args)
        trainer = Trainer(client, args)
        trainer.pull()
        started = time.monotonic()
        if args.coordinator is not None:
            train_with_coordinator(trainer, x_train, y_train, args,
                                   args.coordinator or addresses[0])
        else:
            rng = np.random.default_rng(args.seed)
            for _ in range(args.epochs):
                trainer.train_on(x_train, y_train, rng)
        elapsed = time.monotonic() - started
        client.leave()
        # The final weights, as an evaluator sees them (other workers may
        # still be training).
        final = client.pull([args.weights_name, args.bias_name])
    test_accuracy = accuracy(final[args.weights_name], final[args.bias_name], x_test, y_test)
    print("steps=%d seconds=%.1f last_loss=%.4f test_accuracy=%.4f" %
          (trainer.steps, elapsed, trainer.last_loss, test_accuracy), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
