"""Adversarial training on the word embeddings: FGM (Miyato et al.) and PGD (Madry et al.).

Both perturb only the word-embedding matrix in the direction of its gradient, run an extra
forward/backward whose gradients add to the clean ones, and then put the embedding weights back
bit-for-bit (we keep a copy rather than subtract the perturbation, which would drift in float).
"""
from __future__ import annotations

from typing import Callable

import torch
from torch import nn

from bertorch.errors import UsageError

ADVERSARIAL_METHODS = ("fgm", "pgd")


class FGM:
    def __init__(self, embedding: nn.Embedding, epsilon: float = 1.0):
        self.weight = embedding.weight
        self.epsilon = epsilon
        self.backup: torch.Tensor | None = None

    def attack(self) -> None:
        grad = self.weight.grad
        if grad is None:
            return
        self.backup = self.weight.data.clone()
        norm = torch.linalg.vector_norm(grad)
        if norm > 0 and torch.isfinite(norm):
            self.weight.data.add_(self.epsilon * grad / norm)

    def restore(self) -> None:
        if self.backup is not None:
            self.weight.data.copy_(self.backup)
            self.backup = None

    def step(self, loss_fn: Callable[[], torch.Tensor], backward: Callable[[torch.Tensor, bool], None],
             params: list[nn.Parameter]) -> None:
        """After the clean backward: perturb, add the adversarial gradients, restore the embeddings."""
        self.attack()
        backward(loss_fn(), True)
        self.restore()


class PGD:
    """K projected steps of size alpha inside an epsilon ball; the last step's gradients are kept."""

    def __init__(self, embedding: nn.Embedding, epsilon: float = 1.0, alpha: float = 0.3, steps: int = 3):
        if steps < 1:
            raise UsageError(f"--adv_steps must be at least 1, got {steps}")
        self.weight = embedding.weight
        self.epsilon, self.alpha, self.steps = epsilon, alpha, steps

    def step(self, loss_fn: Callable[[], torch.Tensor], backward: Callable[[torch.Tensor, bool], None],
             params: list[nn.Parameter]) -> None:
        original = self.weight.data.clone()
        clean_grads = [p.grad.clone() if p.grad is not None else None for p in params]
        try:
            for k in range(self.steps):
                grad = self.weight.grad
                norm = torch.linalg.vector_norm(grad) if grad is not None else torch.tensor(0.0)
                if grad is not None and norm > 0 and torch.isfinite(norm):
                    self.weight.data.add_(self.alpha * grad / norm)
                    delta = self.weight.data - original
                    delta_norm = torch.linalg.vector_norm(delta)
                    if delta_norm > self.epsilon:
                        self.weight.data.copy_(original + delta * (self.epsilon / delta_norm))
                # Intermediate steps only need the embedding gradient's direction; the last one adds its
                # gradients to the clean ones. Gradients are written in place to keep DDP's views valid.
                last = k == self.steps - 1
                for p, g in zip(params, clean_grads):
                    if p.grad is None:
                        continue
                    if last and g is not None:
                        p.grad.copy_(g)
                    else:
                        p.grad.zero_()
                backward(loss_fn(), last)
        finally:
            self.weight.data.copy_(original)


def build_adversary(method: str | None, embedding: nn.Embedding, epsilon: float, alpha: float, steps: int):
    if method is None:
        return None
    if method == "fgm":
        return FGM(embedding, epsilon)
    if method == "pgd":
        return PGD(embedding, epsilon, alpha, steps)
    raise UsageError(f"unknown --adversarial {method!r}; choose from {', '.join(ADVERSARIAL_METHODS)}")
