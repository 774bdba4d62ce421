"""dcasgd data sets from Python: the data shards written by dcasgd-prepare-data
(docs/data-format.md), read from a directory or an S3-compatible bucket, and
the coordinator's leases of them (coordinator.proto), so Python workers share
one epoch schedule with the C++ workers of the same job.

    data = dcasgd.data.DataSet.open("s3://bucket/fashion-mnist")   # or a directory
    shard = data.load_train(3)            # DataShard: pixels, labels, rows, cols
    for lease, shard in dcasgd.data.LeasedShards(data, "127.0.0.1:7000", "w0", epochs=2):
        ...                                # train on shard, then the loop completes it

Needs only numpy; S3 needs Debian's python3-boto3 (imported on first use).
"""

from __future__ import annotations

import dataclasses
import logging
import os
import threading
import time
import zlib
from typing import Callable, Iterator, List, Optional, Tuple

import grpc
import numpy as np

from dcasgd.coordinator import DataCoordinatorClient
from dcasgd.errors import Error

_LOG = logging.getLogger("dcasgd")

MAGIC = b"DCASGDDS"
FORMAT_VERSION = 1
HEADER_BYTES = 40
TRAILER_BYTES = 4
# Bounds of a header (docs/data-format.md): classes 1..256; rows and cols
# are bounded so that one example's size fits comfortably in memory.
MAX_SIDE = 1 << 16


class DataError(ValueError):
    """A data shard that is truncated, corrupt or of an unknown format
    version; the message names the object. Never trained on."""


@dataclasses.dataclass(frozen=True)
class DataShard:
    """One decoded data shard: `pixels` uint8 [n, rows * cols] (row-major
    images), `labels` uint8 [n] (each < num_classes)."""

    name: str
    rows: int
    cols: int
    num_classes: int
    pixels: np.ndarray
    labels: np.ndarray

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def features(self) -> np.ndarray:
        """float32 [n, rows * cols] in [0, 1] (pixel / 255), as the C++
        worker feeds its models."""
        return self.pixels.astype(np.float32) / np.float32(255.0)


def decode_data_shard(blob: bytes, name: str = "data shard") -> DataShard:
    """Decodes and verifies a .dsd object (format version 1).

    Raises DataError naming `name` for anything truncated or corrupt (size,
    magic, CRC-32, reserved fields, a label >= num_classes) and for an intact
    shard of another format version, exactly where the C++ reader
    (services/worker/data/data_shard.cc) refuses one.
    """
    view = memoryview(blob)
    if len(view) < HEADER_BYTES + TRAILER_BYTES:
        raise DataError("%s: truncated (%d bytes, a shard has at least %d)" %
                        (name, len(view), HEADER_BYTES + TRAILER_BYTES))
    if bytes(view[0:8]) != MAGIC:
        raise DataError("%s: not a dcasgd data shard (bad magic)" % name)
    stored_crc = int.from_bytes(view[-4:], "little")
    actual_crc = zlib.crc32(view[:-4]) & 0xFFFFFFFF
    if stored_crc != actual_crc:
        raise DataError("%s: CRC-32 mismatch (stored %08x, computed %08x): corrupt" %
                        (name, stored_crc, actual_crc))
    version = int.from_bytes(view[8:12], "little")
    if version != FORMAT_VERSION:
        raise DataError("%s: format version %d, this reader knows %d (written by a newer tool)" %
                        (name, version, FORMAT_VERSION))
    flags = int.from_bytes(view[12:16], "little")
    count = int.from_bytes(view[16:24], "little")
    rows = int.from_bytes(view[24:28], "little")
    cols = int.from_bytes(view[28:32], "little")
    classes = int.from_bytes(view[32:36], "little")
    reserved = int.from_bytes(view[36:40], "little")
    if flags != 0 or reserved != 0:
        raise DataError("%s: reserved header fields are not zero" % name)
    if not (0 < rows <= MAX_SIDE and 0 < cols <= MAX_SIDE):
        raise DataError("%s: image size %dx%d out of range" % (name, rows, cols))
    if not 1 <= classes <= 256:
        raise DataError("%s: %d classes, must be 1..256" % (name, classes))
    example = rows * cols
    expected = HEADER_BYTES + count * (example + 1) + TRAILER_BYTES
    if count > len(view) or len(view) != expected:
        raise DataError("%s: %d bytes, the header (%d examples of %dx%d) needs %d" %
                        (name, len(view), count, rows, cols, expected))
    pixels = np.frombuffer(blob, dtype=np.uint8, count=count * example,
                           offset=HEADER_BYTES).reshape(count, example)
    labels = np.frombuffer(blob, dtype=np.uint8, count=count,
                           offset=HEADER_BYTES + count * example)
    if count and int(labels.max()) >= classes:
        raise DataError("%s: label %d >= %d classes" % (name, int(labels.max()), classes))
    return DataShard(name, rows, cols, classes, pixels, labels)


# ----- stores ------------------------------------------------------------------


class DirectoryStore:
    """Objects as files under a directory (or a file:// URL)."""

    def __init__(self, root: str):
        self.root = root[len("file://"):] if root.startswith("file://") else root
        if not os.path.isdir(self.root):
            raise FileNotFoundError("data set directory %s does not exist" % self.root)

    def uri(self, key: str) -> str:
        return os.path.join(self.root, key)

    def list(self, prefix: str) -> List[str]:
        directory = os.path.join(self.root, os.path.dirname(prefix))
        if not os.path.isdir(directory):
            return []
        base = os.path.basename(prefix)
        rel = os.path.dirname(prefix)
        return sorted(os.path.join(rel, f) for f in os.listdir(directory) if f.startswith(base))

    def get(self, key: str) -> bytes:
        with open(self.uri(key), "rb") as f:
            return f.read()


class S3Store:
    """Objects in an S3-compatible bucket, s3://BUCKET/PREFIX, through
    boto3 (Debian: python3-boto3), path-style, SigV4.

    Settings follow the AWS conventions the C++ worker reads:
    AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, optional AWS_SESSION_TOKEN,
    AWS_REGION (default us-east-1), AWS_ENDPOINT_URL_S3 or AWS_ENDPOINT_URL
    (default: AWS). Errors are boto3's (botocore.exceptions.ClientError for a
    403 or a missing object, naming the bucket and key).
    """

    def __init__(self, url: str, env=None):
        try:
            import boto3  # pylint: disable=import-outside-toplevel
            from botocore.config import Config  # pylint: disable=import-outside-toplevel
        except ImportError as error:
            raise ImportError("reading s3:// data needs boto3: apt-get install python3-boto3") \
                from error
        env = os.environ if env is None else env
        rest = url[len("s3://"):]
        self.bucket, _, prefix = rest.partition("/")
        if not self.bucket:
            raise ValueError("%s: no bucket name" % url)
        self.prefix = prefix.strip("/")
        endpoint = env.get("AWS_ENDPOINT_URL_S3") or env.get("AWS_ENDPOINT_URL") or None
        self._client = boto3.session.Session().client(
            "s3", endpoint_url=endpoint, region_name=env.get("AWS_REGION") or "us-east-1",
            aws_access_key_id=env.get("AWS_ACCESS_KEY_ID"),
            aws_secret_access_key=env.get("AWS_SECRET_ACCESS_KEY"),
            aws_session_token=env.get("AWS_SESSION_TOKEN") or None,
            config=Config(s3={"addressing_style": "path"}, signature_version="s3v4",
                          retries={"max_attempts": 5, "mode": "standard"}))

    def _key(self, key: str) -> str:
        return "%s/%s" % (self.prefix, key) if self.prefix else key

    def uri(self, key: str) -> str:
        return "s3://%s/%s" % (self.bucket, self._key(key))

    def list(self, prefix: str) -> List[str]:
        strip = len(self.prefix) + 1 if self.prefix else 0
        keys = []
        for page in self._client.get_paginator("list_objects_v2").paginate(
                Bucket=self.bucket, Prefix=self._key(prefix)):
            keys.extend(o["Key"][strip:] for o in page.get("Contents", []))
        return sorted(keys)

    def get(self, key: str) -> bytes:
        return self._client.get_object(Bucket=self.bucket, Key=self._key(key))["Body"].read()


def open_store(root: str):
    """A DirectoryStore or S3Store for `root` (a directory, file://..., or
    s3://bucket/prefix)."""
    if root.startswith("s3://"):
        return S3Store(root)
    return DirectoryStore(root)


class DataSet:
    """The train/ and test/ data shards under a store root, as the C++
    worker sees them (services/worker/data_source.h): train shards sorted by
    key, shard i of the coordinator's schedule = the i-th key.

    Not thread-safe (the S3 client is, the list is immutable).
    """

    def __init__(self, store, train_keys: List[str], test_keys: List[str]):
        self.store = store
        self.train_keys = train_keys
        self.test_keys = test_keys

    @classmethod
    def open(cls, root: str) -> "DataSet":
        """Lists the shards of the data set at `root`. FileNotFoundError
        when it has no train/*.dsd objects."""
        store = open_store(root)
        train = [k for k in store.list("train/") if k.endswith(".dsd")]
        test = [k for k in store.list("test/") if k.endswith(".dsd")]
        if not train:
            raise FileNotFoundError("no train/*.dsd data shards under %s (run "
                                    "dcasgd-prepare-data --dest=%s)" % (root, root))
        return cls(store, train, test)

    @property
    def num_train_shards(self) -> int:
        return len(self.train_keys)

    def load_train(self, index: int) -> DataShard:
        """Reads and verifies train shard `index` (DataError when corrupt)."""
        key = self.train_keys[index]
        return decode_data_shard(self.store.get(key), self.store.uri(key))

    def load_test(self) -> DataShard:
        """Every test shard, concatenated (FileNotFoundError when none)."""
        if not self.test_keys:
            raise FileNotFoundError("the data set has no test/*.dsd shards")
        parts = [decode_data_shard(self.store.get(k), self.store.uri(k)) for k in self.test_keys]
        first = parts[0]
        return DataShard("test", first.rows, first.cols, first.num_classes,
                         np.concatenate([p.pixels for p in parts]),
                         np.concatenate([p.labels for p in parts]))


# ----- leases --------------------------------------------------------------------


class _LeaseRenewer:
    """Renews one data lease every third of its duration on a daemon thread
    until stopped. A FAILED_PRECONDITION answer (the lease expired and went to
    another worker), or UNAUTHENTICATED (its secret refused), sets `lost`; other errors (shard 0 restarting: its leases
    survive) are logged and retried at the next interval."""

    def __init__(self, coordinator: DataCoordinatorClient, lease, worker_name: str):
        self._coordinator = coordinator
        self._lease = lease  # carries the lease's secret: never logged
        self._lease_id = lease.lease_id
        self._interval = max(0.01, lease.lease_ms / 3000.0)
        self._worker_name = worker_name
        self._stop = threading.Event()
        self.lost: Optional[str] = None  # written once by the thread
        self._thread = threading.Thread(target=self._loop, daemon=True,
                                        name="dcasgd-data-lease-%d" % self._lease_id)
        self._thread.start()

    def _loop(self):
        while not self._stop.wait(self._interval):
            try:
                self._coordinator.renew(self._lease)
            except Error as error:
                if error.code in (grpc.StatusCode.FAILED_PRECONDITION,
                                  grpc.StatusCode.UNAUTHENTICATED):
                    self.lost = error.message
                    return
                _LOG.info("[%s] renewing data lease %d failed, training on: %s",
                          self._worker_name, self._lease_id, error)

    def stop(self):
        self._stop.set()
        self._thread.join()


class LeasedShards:
    """Iterates over the data shards the coordinator (shard 0) leases to
    `worker_name`, for a job of `epochs` epochs over every train shard of
    `data`: yields (lease, DataShard) until the job is done.

    The lease is renewed in the background while the caller trains on the
    shard, and completed when the caller asks for the next one, i.e. after it
    trained on the whole shard; `lease_lost()` says whether the lease expired
    meanwhile (then the caller should stop training on it: another worker
    got it, and it is not completed). abandon() leaves the current shard
    uncompleted (its lease expires and it goes to another worker); stop()
    ends the iteration before the next lease. Waits `retry_after_ms` while
    every shard is leased out. Data shards that fail to decode (DataError)
    are reported and not completed (their lease expires; the C++ workers do
    the same).

    The first acquire fixes the job's (num_data_shards, epochs) on the
    coordinator: every worker, C++ or Python, must agree, or it gets
    FAILED_PRECONDITION.
    """

    def __init__(self, data: DataSet, coordinator, worker_name: str, epochs: int = 1,
                 sleep: Callable[[float], None] = time.sleep):
        if isinstance(coordinator, str):
            coordinator = DataCoordinatorClient(coordinator)
            self._owns_coordinator = True
        else:
            self._owns_coordinator = False
        self.data = data
        self.coordinator = coordinator
        self.worker_name = worker_name
        self.epochs = int(epochs)
        self._sleep = sleep
        self._stop = threading.Event()
        self._renewer: Optional[_LeaseRenewer] = None
        self._abandoned = False
        self.completed: List[Tuple[int, int]] = []  # (epoch, data shard) this worker completed
        self.job_done = False

    def lease_lost(self) -> bool:
        """True when the current lease expired and went to another worker."""
        renewer = self._renewer
        return renewer is not None and renewer.lost is not None

    def stop(self):
        """Ends the iteration before the next lease (thread-safe)."""
        self._stop.set()

    def abandon(self):
        """The current shard is not to be completed (not trained to its end)."""
        self._abandoned = True

    def __iter__(self) -> Iterator[Tuple[object, DataShard]]:
        try:
            while not self._stop.is_set():
                response = self.coordinator.acquire(self.worker_name, self.data.num_train_shards,
                                                    self.epochs)
                kind = response.WhichOneof("result")
                if kind == "job_done":
                    self.job_done = True
                    return
                if kind == "retry_after_ms":
                    self._stop.wait(response.retry_after_ms / 1000.0)
                    continue
                lease = response.lease
                self._abandoned = False
                self._renewer = _LeaseRenewer(self.coordinator, lease, self.worker_name)
                try:
                    try:
                        shard = self.data.load_train(lease.data_shard)
                    except DataError as error:
                        _LOG.error("[%s] skipping data shard %d: %s", self.worker_name,
                                   lease.data_shard, error)
                        continue
                    yield lease, shard
                    if self._abandoned or self.lease_lost():
                        continue
                    self._complete(lease)
                finally:
                    self._renewer.stop()
                    self._renewer = None
        finally:
            if self._owns_coordinator:
                self.coordinator.close()

    def _complete(self, lease):
        try:
            self.coordinator.complete(lease)
        except Error as error:
            # FAILED_PRECONDITION: the lease expired meanwhile and the shard
            # went to someone else, who trains it again; else shard 0 stayed
            # unreachable and the lease will expire the same way.
            _LOG.warning("[%s] trained data shard %d of epoch %d but could not complete "
                         "lease %d: %s", self.worker_name, lease.data_shard, lease.epoch + 1,
                         lease.lease_id, error)
            return
        self.completed.append((lease.epoch, lease.data_shard))
        _LOG.info("[%s] trained data shard %d of epoch %d (lease %d)", self.worker_name,
                  lease.data_shard, lease.epoch + 1, lease.lease_id)
