"""PyTorch versions of the C++ worker's models (services/worker/model/), with
the same tensor names, shapes and element layout, so PyTorch and C++ workers
can train one job together."""

from __future__ import annotations

from typing import Dict

import torch
import torch.nn.functional as F


class ConvNet(torch.nn.Module):
    """The C++ worker's "cnn:C1,C2,H" (default "cnn" = 8, 16, 128) for square
    one-channel images of side S (28 for Fashion-MNIST):

      conv1 5x5 1->C1, padding 2, ReLU, 2x2 max pool
      conv2 5x5 C1->C2, padding 2, ReLU, 2x2 max pool
      fc1   (S/4)^2 * C2 -> H, ReLU
      fc2   H -> classes (logits; train with F.cross_entropy)

    The parameters are stored as the C++ model keeps them
    (services/worker/model/conv_net.h), not in PyTorch's layout:
      conv{1,2}_w [5, 5, C_in, C_out] (ky, kx, input channel, output channel),
      fc{1,2}_w [in, out], biases [out]; fc1's input is pool2's output in
      (y, x, channel) order.
    forward() permutes them for torch's operators. `dcasgd_tensor_names`
    maps them to the C++ names (cnn/conv1/w, ...), which ShardOptimizer uses
    by default. Initialised like the C++ model (He normal for the layers
    before a ReLU, normal(0, 0.01) for fc2, zero biases), from torch's RNG.

    Input: [B, 1, S, S] or [B, S * S] floats (pixel / 255).
    """

    def __init__(self, conv1_channels: int = 8, conv2_channels: int = 16, hidden: int = 128,
                 image_side: int = 28, num_classes: int = 10):
        super().__init__()
        for value, what in ((conv1_channels, "conv1_channels"), (conv2_channels, "conv2_channels"),
                            (hidden, "hidden"), (num_classes, "num_classes")):
            if value < 1:
                raise ValueError("%s must be >= 1" % what)
        if not 4 <= image_side <= 1024:
            raise ValueError("image_side must be in [4, 1024]")
        self.image_side = image_side
        flat = (image_side // 2 // 2) ** 2 * conv2_channels
        shapes = {
            "conv1_w": (5, 5, 1, conv1_channels), "conv1_b": (conv1_channels,),
            "conv2_w": (5, 5, conv1_channels, conv2_channels), "conv2_b": (conv2_channels,),
            "fc1_w": (flat, hidden), "fc1_b": (hidden,),
            "fc2_w": (hidden, num_classes), "fc2_b": (num_classes,),
        }
        stddevs = {"conv1_w": (2.0 / 25) ** 0.5, "conv2_w": (2.0 / (25 * conv1_channels)) ** 0.5,
                   "fc1_w": (2.0 / flat) ** 0.5, "fc2_w": 0.01}
        for name, shape in shapes.items():
            value = torch.zeros(shape)
            if name in stddevs:
                value.normal_(0.0, stddevs[name])
            self.register_parameter(name, torch.nn.Parameter(value))
        self.dcasgd_tensor_names: Dict[str, str] = {
            name: "cnn/" + name.replace("_", "/") for name in shapes}

    @property
    def model_name(self) -> str:
        """The C++ worker's --model value for the same architecture."""
        return "cnn:%d,%d,%d" % (self.conv1_w.shape[3], self.conv2_w.shape[3],
                                  self.fc1_w.shape[1])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        side = self.image_side
        x = x.reshape(-1, 1, side, side)
        # [ky, kx, in, out] -> torch's [out, in, ky, kx].
        x = F.conv2d(x, self.conv1_w.permute(3, 2, 0, 1), self.conv1_b, padding=2)
        x = F.max_pool2d(F.relu(x), 2)
        x = F.conv2d(x, self.conv2_w.permute(3, 2, 0, 1), self.conv2_b, padding=2)
        x = F.max_pool2d(F.relu(x), 2)
        # (channel, y, x) -> (y, x, channel), the C++ model's fc1 input order.
        x = x.permute(0, 2, 3, 1).reshape(x.shape[0], -1)
        x = F.relu(x @ self.fc1_w + self.fc1_b)
        return x @ self.fc2_w + self.fc2_b
