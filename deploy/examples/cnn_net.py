"""The ``cnn`` example network: ``x`` float32 [batch, 3, 32, 32] (NCHW) -> ``logits`` float32 [batch, 10].

Packaged into the TorchServe archive as its model file (``--model-file``), next to a
``state_dict`` of its weights: the handler builds the network from this module and loads the
weights into it. This module therefore runs inside the official TorchServe image (Python 3.9,
torch 2.4) as well as locally: Python 3.8 syntax, torch APIs of torch 2.0 or older, and exactly
one class, constructible without arguments (TorchServe's own eager-mode convention).
"""

from torch import nn


class CNNNet(nn.Sequential):
    """Four 3x3 convolutions (16, 32, 64, 64 channels, two 2x2 max-pools), global average
    pooling and Linear(64, 10): about 24.5 MFLOPs per example."""

    def __init__(self) -> None:
        super().__init__(
            nn.Conv2d(3, 16, kernel_size=3, padding=1),
            nn.ReLU(),
            nn.Conv2d(16, 32, kernel_size=3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(32, 64, kernel_size=3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(64, 64, kernel_size=3, padding=1),
            nn.ReLU(),
            # Global average pooling: the flatten below is then independent of NCHW vs NHWC order.
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
            nn.Linear(64, 10),
        )
