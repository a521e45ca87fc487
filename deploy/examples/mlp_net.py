"""The ``mlp`` example network: ``x`` float32 [batch, 4] -> ``probabilities`` float32 [batch, 3].

Packaged into the TorchServe archive as its model file (``--model-file``), next to a
``state_dict`` of its weights: the handler builds the network from this module and loads the
weights into it. This module therefore runs inside the official TorchServe image (Python 3.9,
torch 2.4) as well as locally: Python 3.8 syntax, torch APIs of torch 2.0 or older, and exactly
one class, constructible without arguments (TorchServe's own eager-mode convention).
"""

from torch import nn


class MLPNet(nn.Sequential):
    """Linear(4, hidden) - ReLU - Linear(hidden, 3) - Softmax over the classes."""

    def __init__(self, hidden: int = 16) -> None:
        super().__init__(
            nn.Linear(4, hidden),
            nn.ReLU(),
            nn.Linear(hidden, 3),
            nn.Softmax(dim=1),
        )
