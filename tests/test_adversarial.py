"""FGM and PGD add adversarial gradients and restore the embeddings bit-for-bit."""
import torch
from torch import nn

from bertorch.adversarial import FGM, PGD


class Model(nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.emb = nn.Embedding(10, 8)
        self.out = nn.Linear(8, 2)

    def loss(self, ids, y):
        return nn.functional.cross_entropy(self.out(self.emb(ids).mean(1)), y)


def run(adversary_cls, **kw):
    m = Model()
    ids, y = torch.tensor([[1, 2, 3], [4, 5, 6]]), torch.tensor([0, 1])
    before = m.emb.weight.detach().clone()
    m.loss(ids, y).backward()
    clean = m.out.weight.grad.clone()
    adv = adversary_cls(m.emb, **kw)
    calls = []
    adv.step(lambda: m.loss(ids, y), lambda loss, final: (calls.append(final), loss.backward()),
             list(m.parameters()))
    return m, before, clean, calls


def test_fgm_restores_embeddings_and_adds_gradients():
    m, before, clean, calls = run(FGM, epsilon=1.0)
    assert torch.equal(m.emb.weight.detach(), before)
    assert calls == [True]
    assert not torch.allclose(m.out.weight.grad, clean)


def test_pgd_restores_embeddings_keeps_clean_plus_last_step():
    m, before, clean, calls = run(PGD, epsilon=1.0, alpha=0.3, steps=3)
    assert torch.equal(m.emb.weight.detach(), before)
    assert calls == [False, False, True]
    # The final gradient is clean + adversarial (not three adversarial passes summed).
    assert m.out.weight.grad.norm() < 2.5 * clean.norm()
    assert not torch.allclose(m.out.weight.grad, clean)
