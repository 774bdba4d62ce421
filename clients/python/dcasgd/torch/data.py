"""LeasedDataset: minibatches of the dcasgd data shards the coordinator
leases to this worker, as a torch IterableDataset."""

from __future__ import annotations

import logging
from typing import Iterator, Optional, Tuple, Union

import numpy as np
import torch
import torch.utils.data

from dcasgd import data as data_lib

_LOG = logging.getLogger("dcasgd")


def batches(shard: data_lib.DataShard, batch_size: int, rng: Optional[np.random.Generator] = None,
            image: bool = True) -> Iterator[Tuple[torch.Tensor, torch.Tensor]]:
    """Minibatches (x float32, y int64) of one data shard, in `rng`'s order
    (None: file order); the last one may be smaller. x is [B, 1, rows, cols]
    with image=True, else [B, rows * cols]; values pixel / 255 in [0, 1]."""
    order = np.arange(len(shard)) if rng is None else rng.permutation(len(shard))
    for start in range(0, len(order), batch_size):
        index = order[start:start + batch_size]
        x = torch.from_numpy(shard.pixels[index].astype(np.float32) / np.float32(255.0))
        if image:
            x = x.reshape(len(index), 1, shard.rows, shard.cols)
        yield x, torch.from_numpy(shard.labels[index].astype(np.int64))


class LeasedDataset(torch.utils.data.IterableDataset):
    """Minibatches (x, y) of the data shards the coordinator on shard 0 leases
    to `worker_name` for a job of `epochs` epochs over every train shard of
    the data set at `data` (a directory, or s3://bucket/prefix with the AWS_*
    variables; a dcasgd.data.DataSet also works).

    Each leased shard is shuffled (seeded by seed, epoch and data shard) and
    cut into batches of batch_size; its lease is renewed while its batches
    are consumed and completed when the next batch is asked for after its
    last one, i.e. after the training loop has pushed that batch. So every
    epoch covers each data shard once, however many workers (C++ or PyTorch)
    come and go: a worker that stops or dies leaves its lease to expire and
    the shard goes to another worker. Iteration ends when the job is done,
    after stop(), or after max_steps batches.

    Use it directly or in a DataLoader with batch_size=None and
    num_workers=0 (batches are made here; a loader process of its own would
    lease shards apart from the training loop and complete them before they
    are trained): ValueError otherwise.

    Attributes after or during iteration: `steps` (batches yielded),
    `job_done`, `completed` [(epoch, data shard)] this worker completed,
    `current_lease`.
    """

    def __init__(self, data: Union[str, data_lib.DataSet], coordinator, worker_name: str, *,
                 epochs: int = 1, batch_size: int = 64, seed: int = 1, image: bool = True,
                 max_steps: int = 0):
        super().__init__()
        if batch_size < 1:
            raise ValueError("batch_size must be >= 1")
        self.data = data if isinstance(data, data_lib.DataSet) else data_lib.DataSet.open(data)
        self.coordinator = coordinator
        self.worker_name = worker_name
        self.epochs = int(epochs)
        self.batch_size = int(batch_size)
        self.seed = int(seed)
        self.image = image
        self.max_steps = int(max_steps)
        self.steps = 0
        self.current_lease = None
        self._leases: Optional[data_lib.LeasedShards] = None

    @property
    def job_done(self) -> bool:
        return self._leases is not None and self._leases.job_done

    @property
    def completed(self):
        return [] if self._leases is None else list(self._leases.completed)

    def stop(self) -> None:
        """Ends the iteration before the next batch; the current lease is
        not completed (it expires and goes to another worker)."""
        if self._leases is not None:
            self._leases.abandon()
            self._leases.stop()

    def __iter__(self) -> Iterator[Tuple[torch.Tensor, torch.Tensor]]:
        if torch.utils.data.get_worker_info() is not None:
            raise ValueError("LeasedDataset must be iterated in the training process "
                             "(DataLoader num_workers=0): leases are completed when the "
                             "training loop asks for the next batch")
        self._leases = data_lib.LeasedShards(self.data, self.coordinator, self.worker_name,
                                             self.epochs)
        leases = self._leases
        for lease, shard in leases:
            self.current_lease = lease
            rng = np.random.default_rng([self.seed, lease.epoch, lease.data_shard])
            for x, y in batches(shard, self.batch_size, rng, self.image):
                if leases.lease_lost():
                    _LOG.warning("[%s] data lease %d expired and went to another worker; "
                                 "leaving data shard %d", self.worker_name, lease.lease_id,
                                 lease.data_shard)
                    break
                if self.max_steps and self.steps >= self.max_steps:
                    leases.abandon()  # not trained to its end
                    leases.stop()
                    break
                self.steps += 1
                yield x, y
            if self.max_steps and self.steps >= self.max_steps:
                leases.stop()
        self.current_lease = None
