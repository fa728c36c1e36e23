"""TF-style RMSprop and the flat parameter buffer."""

import math

import pytest
import torch

from rl_relax.optim import FlatParameters, RMSpropTFLike


def test_rmsprop_tf_like_follows_the_tensorflow_formula():
    p = torch.tensor([1.0, -2.0])
    p.grad = torch.tensor([0.5, 0.1])
    opt = RMSpropTFLike([p], lr=0.1, alpha=0.9, eps=1e-5)
    opt.step()
    # v = 0.9 * 1 + 0.1 * g^2 (v starts at ONE, as in TensorFlow); p -= lr * g / sqrt(v + eps)
    v = 0.9 + 0.1 * torch.tensor([0.25, 0.01])
    torch.testing.assert_close(p, torch.tensor([1.0, -2.0]) - 0.1 * torch.tensor([0.5, 0.1]) / torch.sqrt(v + 1e-5))
    # Power: PyTorch's RMSprop (v0 = 0, eps outside the sqrt) gives a different step.
    q = torch.tensor([1.0, -2.0], requires_grad=True)
    q.grad = torch.tensor([0.5, 0.1])
    torch.optim.RMSprop([q], lr=0.1, alpha=0.9, eps=1e-5).step()
    assert not torch.allclose(p, q.detach())


def test_flat_parameters_share_storage_and_clip_like_torch():
    torch.manual_seed(0)
    net_a, net_b = torch.nn.Linear(3, 4), torch.nn.Linear(3, 4)
    net_b.load_state_dict(net_a.state_dict())
    flat = FlatParameters(net_a.parameters())
    x = torch.randn(8, 3)
    for net in (net_a, net_b):
        (net(x) ** 2).sum().mul(10).backward()
    norm = flat.clip_grad_norm_(0.5)
    ref = torch.nn.utils.clip_grad_norm_(net_b.parameters(), 0.5)
    assert math.isclose(norm, ref.item(), rel_tol=1e-5)
    for pa, pb in zip(net_a.parameters(), net_b.parameters(), strict=True):
        torch.testing.assert_close(pa.grad, pb.grad)
    # Parameters are views into the flat buffer: an optimizer step on it moves the module.
    before = net_a.weight.detach().clone()
    torch.optim.SGD([flat.data], lr=1.0).step()
    torch.testing.assert_close(net_a.weight, before - net_a.weight.grad)
    flat.zero_grad()
    assert all((p.grad == 0).all() for p in net_a.parameters())


def test_rmsprop_tf_like_state_dict_round_trips_in_torchs_format():
    """Checkpoints see a torch optimizer state ({"state": {index: ...}, "param_groups": [...]})."""
    p = torch.zeros(3)
    p.grad = torch.tensor([1.0, 2.0, 3.0])
    opt = RMSpropTFLike([p], lr=0.1, alpha=0.9, eps=1e-5)
    opt.step()
    saved = opt.state_dict()
    assert saved["param_groups"] == [{"lr": 0.1, "alpha": 0.9, "eps": 1e-5, "params": [0]}]
    torch.testing.assert_close(saved["state"][0]["square_avg"], 0.9 + 0.1 * p.grad.square())
    q = p.detach().clone()
    q.grad = p.grad.clone()
    restored = RMSpropTFLike([q], lr=0.5)
    restored.load_state_dict(saved)
    assert restored.param_groups[0]["lr"] == 0.1
    opt.step()
    restored.step()
    torch.testing.assert_close(q, p)  # the same second step: v was restored
    with pytest.raises(ValueError, match="shape"):
        RMSpropTFLike([torch.zeros(2)]).load_state_dict(saved)
