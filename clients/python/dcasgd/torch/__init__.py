"""dcasgd.torch: train a PyTorch module through dcasgd parameter shards.

    import dcasgd, dcasgd.torch
    model = MyNet()
    with dcasgd.Client(shards, worker_name="w0") as ps:
        opt = dcasgd.torch.ShardOptimizer(model, ps)    # declares, pulls
        for x, y in loader:
            opt.zero_grad()
            torch.nn.functional.cross_entropy(model(x), y).backward()
            opt.step()      # pushes the gradients, loads the updated weights

- ShardOptimizer (optimizer.py): declares the module's parameters on the
  shards (names from named_parameters(), initial values from the module),
  then per step PushPulls the gradients and loads the weights the shards
  return. The update rule (DC-ASGD, ASGD, ...) runs on the shards.
- LeasedDataset (data.py): a torch IterableDataset of minibatches over the
  dcasgd data shards (a directory or s3://), leased from the coordinator, so
  PyTorch workers share the epoch schedule with C++ workers.
- ConvNet (models.py): the C++ worker's "cnn" model in PyTorch (same tensor
  names, shapes and layout), for jobs mixing C++ and PyTorch workers.

Needs Debian's python3-torch (1.13); importing dcasgd alone does not.
See docs/pytorch.md.
"""

from dcasgd.torch.data import LeasedDataset, batches
from dcasgd.torch.models import ConvNet
from dcasgd.torch.optimizer import RETRY_CODES, ShardOptimizer

__all__ = ["ConvNet", "LeasedDataset", "RETRY_CODES", "ShardOptimizer", "batches"]
