#!/usr/bin/python3
"""A PyTorch worker of a dcasgd job: a CNN on Fashion-MNIST.

The model is a plain torch.nn.Module (dcasgd.torch.ConvNet, the C++ worker's
"cnn" in PyTorch, so C++ workers can train the same job; --model=own trains
a module defined below instead, for PyTorch-only jobs). Its parameters live
on the shards: dcasgd.torch.ShardOptimizer declares them and, at every
step(), pushes the gradients and loads the weights the shards return. The
data come from dcasgd.torch.LeasedDataset: the data shards the coordinator on
shard 0 leases to this worker, so any number of PyTorch and C++ workers share
one epoch schedule.

    # shards and data as in docs/pytorch.md, then one line per worker:
    /usr/bin/python3 examples/pytorch/train_cnn.py --ps=HOST:7000,HOST:7001 \\
        --data=DIR_OR_S3_URL --worker_name=torch-0 --epochs=1

At the end (the job done, or --max_steps reached) the worker pulls the final
weights, prints "final test accuracy: X" over --test_examples test images,
and exits 0. Needs python3-torch and the dcasgd package (pip install
./clients/python, or PYTHONPATH=clients/python).
"""

import argparse
import socket
import sys
import time

import torch
import torch.nn.functional as F

import dcasgd
import dcasgd.data
import dcasgd.torch


class OwnNet(torch.nn.Module):
    """Any module works with ShardOptimizer; this is what a user writes.
    Its tensors are named after named_parameters() ("conv.weight", ...)."""

    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(1, 8, 5, padding=2)
        self.fc = torch.nn.Linear(8 * 14 * 14, 10)

    def forward(self, x):
        x = F.max_pool2d(F.relu(self.conv(x)), 2)
        return self.fc(x.flatten(1))


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--ps", required=True, help="shard addresses, in shard order")
    parser.add_argument("--data", required=True,
                        help="prepared data set: a directory or s3://bucket/prefix")
    parser.add_argument("--worker_name", default=socket.gethostname())
    parser.add_argument("--model", default="cnn", choices=["cnn", "own"],
                        help="cnn: the C++ workers' model (mixed jobs); own: OwnNet above")
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--batch_size", type=int, default=64)
    parser.add_argument("--max_steps", type=int, default=0, help="0: until the job is done")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--log_every", type=int, default=50)
    parser.add_argument("--test_examples", type=int, default=10000)
    args = parser.parse_args(argv)
    if args.epochs < 1 or args.batch_size < 1 or args.max_steps < 0 or args.test_examples < 1:
        parser.error("--epochs, --batch_size, --test_examples must be >= 1, --max_steps >= 0")
    return args


def main(argv=None):
    args = parse_args(argv)
    torch.manual_seed(args.seed)
    torch.set_num_threads(1)  # one worker process per core, like the C++ worker
    model = dcasgd.torch.ConvNet() if args.model == "cnn" else OwnNet()
    data = dcasgd.data.DataSet.open(args.data)
    shards = args.ps.split(",")

    with dcasgd.Client(shards, worker_name=args.worker_name) as ps:
        # Declares the parameters (or joins the job another worker declared)
        # and loads the job's current weights into the module.
        optimizer = dcasgd.torch.ShardOptimizer(model, ps)
        batches = dcasgd.torch.LeasedDataset(data, shards[0], args.worker_name,
                                             epochs=args.epochs, batch_size=args.batch_size,
                                             seed=args.seed, max_steps=args.max_steps)
        start = time.monotonic()
        for step, (x, y) in enumerate(batches, 1):
            optimizer.zero_grad()
            loss = F.cross_entropy(model(x), y)
            loss.backward()
            optimizer.step()  # PushPull: the shards apply the update rule
            if step % args.log_every == 0:
                lease = batches.current_lease
                print("[%s] step %d: loss %.4f, epoch %d data shard %d, staleness %s, %.0f "
                      "examples/s" % (args.worker_name, step, loss.item(), lease.epoch + 1,
                                      lease.data_shard, list(optimizer.last_result.staleness),
                                      step * args.batch_size / (time.monotonic() - start)),
                      flush=True)
        for epoch, data_shard in batches.completed:
            print("[%s] trained data shard %d of epoch %d" % (args.worker_name, data_shard,
                                                             epoch + 1))
        print("[%s] %s after %d steps of this worker" %
              (args.worker_name, "job done" if batches.job_done else "stopped", batches.steps),
              flush=True)
        optimizer.pull()  # the job's weights now, not this worker's last view

    test = data.load_test()
    n = min(args.test_examples, len(test))
    x = torch.from_numpy(test.features()[:n]).reshape(n, 1, test.rows, test.cols)
    y = torch.from_numpy(test.labels[:n].astype("int64"))
    with torch.no_grad():
        accuracy = float((model(x).argmax(1) == y).float().mean())
    print("final test accuracy: %.4f (%d test examples)" % (accuracy, n))
    return 0


if __name__ == "__main__":
    sys.exit(main())
