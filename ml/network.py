"""The paper's hierarchical multi-label network (Figure 3), heads generated from a taxonomy.

Each level has a branch (stacked fully connected units) and a sigmoid classifier. The branch of
level k takes the backbone features concatenated with the hidden features of level k-1, so the
coarser level acts as a prior. A flat variant (one head on the deepest level) is the baseline.
"""

from __future__ import annotations

import torch
from torch import nn


def _branch(in_dim: int, hidden: int, dropout: float) -> nn.Sequential:
    return nn.Sequential(
        nn.Dropout(dropout),
        nn.Linear(in_dim, hidden),
        nn.BatchNorm1d(hidden),
        nn.ReLU(inplace=True),
        nn.Linear(hidden, hidden),
        nn.ReLU(inplace=True),
    )


class HierarchicalHeads(nn.Module):
    """Features -> list of per-level logits (coarsest first)."""

    def __init__(
        self,
        feature_dim: int,
        level_sizes: list[int],
        hidden: int = 256,
        dropout: float = 0.3,
        flat: bool = False,
    ) -> None:
        super().__init__()
        self.flat = flat
        self.level_sizes = list(level_sizes)
        levels = level_sizes[-1:] if flat else level_sizes
        self.branches = nn.ModuleList()
        self.classifiers = nn.ModuleList()
        for i, size in enumerate(levels):
            in_dim = feature_dim + (hidden if i > 0 else 0)
            self.branches.append(_branch(in_dim, hidden, dropout))
            self.classifiers.append(nn.Linear(hidden, size))

    def forward(self, features: torch.Tensor) -> list[torch.Tensor]:
        logits, previous = [], None
        for branch, classifier in zip(self.branches, self.classifiers, strict=True):
            inputs = features if previous is None else torch.cat([features, previous], dim=1)
            previous = branch(inputs)
            logits.append(classifier(previous))
        return logits

    def last_hidden(self, features: torch.Tensor) -> torch.Tensor:
        """The deepest branch's hidden layer, for t-SNE maps."""
        previous = None
        for branch in self.branches:
            inputs = features if previous is None else torch.cat([features, previous], dim=1)
            previous = branch(inputs)
        assert previous is not None
        return previous


class ScreeningNet(nn.Module):
    def __init__(self, backbone: nn.Module, heads: HierarchicalHeads) -> None:
        super().__init__()
        self.backbone = backbone
        self.heads = heads

    def forward(self, images: torch.Tensor) -> list[torch.Tensor]:
        return self.heads(self.backbone(images))


def level_probabilities(
    logits: list[torch.Tensor], level_sizes: list[int], parent_indices: list[list[int]]
) -> list[torch.Tensor]:
    """Sigmoid per level; a flat head's coarser levels are the max over their children."""
    probs = [torch.sigmoid(t.float()) for t in logits]
    while len(probs) < len(level_sizes):
        level = len(level_sizes) - len(probs)  # the level (0-based) still missing, coarsest last
        child = probs[0]
        index = torch.tensor(parent_indices[level], device=child.device)
        parent = child.new_zeros(child.shape[0], level_sizes[level - 1])
        parent = parent.scatter_reduce(1, index.expand_as(child), child, "amax", include_self=False)
        probs.insert(0, parent)
    return probs
