#!/usr/bin/python3
"""Saves TorchScript modules that dcasgd-worker trains with
--model=torchscript:PATH (docs/pytorch.md, "TorchScript models in the C++
worker"), and the broken ones its tests expect clear errors for.

    /usr/bin/python3 examples/torchscript/save_modules.py OUT_DIR

Writes, into OUT_DIR:
  mlp.pt         torch.jit.script of a ReLU MLP 784-256-128-10, the layout of
                 the Eigen "mlp:256,128" (layers fc0, fc1, fc2)
  mlp_traced.pt  torch.jit.trace of the same MLP with the same weights
  mlp.txt        one line per parameter of mlp.pt, in named_parameters()
                 order: name, shape (comma-separated), sum, first element
  cnn.pt         torch.jit.script of a small CNN (the Eigen "cnn" layout:
                 5x5 convolutions with 8 and 16 channels, 2x2 max pooling,
                 a dense layer of 128); it reshapes N x 784 to N x 1 x 28 x 28
  broken_*.pt    modules the worker must refuse with a clear error: no
                 parameters, wrong output width, wrong input width, a tuple
                 output, float64 parameters
Every module is made with fixed seeds, so the files are the same each run.
Nothing here is committed as a binary: tests run this script.
"""
import os
import sys

import torch
from torch import nn


class Mlp(nn.Module):
    """784 -> 256 -> 128 -> 10 with ReLU, like the Eigen "mlp:256,128"."""

    def __init__(self) -> None:
        super().__init__()
        self.fc0 = nn.Linear(784, 256)
        self.fc1 = nn.Linear(256, 128)
        self.fc2 = nn.Linear(128, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(torch.relu(self.fc1(torch.relu(self.fc0(x)))))


class Cnn(nn.Module):
    """Two 5x5 "same" convolutions (8, 16 channels), each with ReLU and 2x2
    max pooling, a dense ReLU layer of 128 and the output layer."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 8, 5, padding=2)
        self.conv2 = nn.Conv2d(8, 16, 5, padding=2)
        self.fc1 = nn.Linear(16 * 7 * 7, 128)
        self.fc2 = nn.Linear(128, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.view(-1, 1, 28, 28)
        x = torch.max_pool2d(torch.relu(self.conv1(x)), 2)
        x = torch.max_pool2d(torch.relu(self.conv2(x)), 2)
        return self.fc2(torch.relu(self.fc1(x.flatten(1))))


class NoParameters(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x[:, :10] * 2.0


class TupleOutput(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(784, 10)

    def forward(self, x: torch.Tensor):
        y = self.fc(x)
        return y, y


def main() -> int:
    if len(sys.argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    out = sys.argv[1]
    os.makedirs(out, exist_ok=True)

    def save(module: torch.jit.ScriptModule, name: str) -> None:
        tmp = os.path.join(out, name + ".tmp")
        module.save(tmp)
        os.replace(tmp, os.path.join(out, name))  # readers never see half a file

    torch.manual_seed(1)
    mlp = Mlp()
    save(torch.jit.script(mlp), "mlp.pt")
    save(torch.jit.trace(mlp, torch.zeros(3, 784)), "mlp_traced.pt")
    with open(os.path.join(out, "mlp.txt.tmp"), "w") as f:
        for name, p in mlp.named_parameters():
            shape = ",".join(str(d) for d in p.shape)
            f.write(f"{name} {shape} {float(p.double().sum())!r} {float(p.flatten()[0])!r}\n")
    os.replace(os.path.join(out, "mlp.txt.tmp"), os.path.join(out, "mlp.txt"))

    torch.manual_seed(2)
    save(torch.jit.script(Cnn()), "cnn.pt")

    torch.manual_seed(3)
    save(torch.jit.script(NoParameters()), "broken_no_parameters.pt")
    save(torch.jit.script(nn.Linear(784, 5)), "broken_output_width.pt")
    save(torch.jit.script(nn.Linear(100, 10)), "broken_input_width.pt")
    save(torch.jit.script(TupleOutput()), "broken_tuple_output.pt")
    save(torch.jit.script(nn.Linear(784, 10).double()), "broken_float64.pt")
    return 0


if __name__ == "__main__":
    sys.exit(main())
