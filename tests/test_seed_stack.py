"""seed_stack: S modules as one seed-stacked module computes exactly what each module computes."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch

from rl_relax.estimators.relax import RelaxEstimator
from rl_relax.networks import MLP, CategoricalPolicy, GaussianPolicy, ValueNet
from rl_relax.optim import FlatParameters
from rl_relax.seed_stack import copy_seed_from, copy_seed_to, stack_modules

S, B = 3, 7


@pytest.fixture(autouse=True)
def _threads(one_torch_thread):
    yield


def mlps(activation: str = "tanh") -> list[MLP]:
    torch.manual_seed(0)
    return [MLP(4, [16, 8], 3, activation) for _ in range(S)]


@pytest.mark.parametrize("activation", ["tanh", "relu", "elu"])
def test_stacked_forward_and_jvp_equal_each_seed(activation):
    singles = mlps(activation)
    stacked = stack_modules(singles)
    assert stacked.num_seeds == S and stacked.layers[0].weight.shape == (S, 16, 4)
    x = torch.randn(S, B, 4)
    tangents = [torch.randn_like(p) for p in stacked.parameters()]
    out, jvp = stacked(x), stacked.jvp(x, tangents)
    for k, single in enumerate(singles):
        torch.testing.assert_close(out[k], single(x[k]))
        torch.testing.assert_close(jvp[k], single.jvp(x[k], [t[k] for t in tangents]))
        assert np.allclose(stacked.forward_numpy(x.numpy())[k], single.forward_numpy(x[k].numpy()), atol=1e-6)


def test_a_seed_gets_only_its_own_gradient():
    singles = mlps()
    stacked = stack_modules(singles)
    x = torch.randn(S, B, 4)
    stacked(x).sum(dim=(1, 2))[1].backward()  # seed 1's output only
    grads = [p.grad for p in stacked.parameters()]
    assert all(g[[0, 2]].abs().max() == 0 for g in grads)
    singles[1](x[1]).sum().backward()
    for g, p in zip(grads, singles[1].parameters(), strict=True):
        torch.testing.assert_close(g[1], p.grad)


def test_copy_seed_round_trip_and_broadcast_shapes():
    torch.manual_seed(1)
    space = gym.spaces.Box(-1.0, 1.0, (2,), np.float32)
    singles = [GaussianPolicy(3, space, [8], "tanh", True, log_std_init=0.1 * k) for k in range(S)]
    stacked = stack_modules(singles)
    assert stacked.log_std.shape == (S, 1, 2)  # broadcasts against (S, B, 2) means
    fresh = GaussianPolicy(3, space, [8], "tanh", True)
    copy_seed_to(stacked, 2, fresh)
    for a, b in zip(fresh.parameters(), singles[2].parameters(), strict=True):
        assert torch.equal(a, b)
    with torch.no_grad():
        fresh.log_std.fill_(-3.0)
    copy_seed_from(stacked, 0, fresh)
    assert torch.equal(stacked.log_std[0, 0], torch.full((2,), -3.0)) and torch.equal(
        stacked.log_std[1, 0], singles[1].log_std
    )


def test_stacked_policies_log_prob_entropy_and_sampling():
    torch.manual_seed(2)
    cats = [CategoricalPolicy(4, 3, [8], "tanh", True) for _ in range(S)]
    space = gym.spaces.Box(-1.0, 1.0, (2,), np.float32)
    gauss = [GaussianPolicy(4, space, [8], "tanh", True, log_std_init=-0.5 * k) for k in range(S)]
    obs = torch.randn(S, B, 4)
    for singles in (cats, gauss):
        stacked = stack_modules(singles)
        params = stacked(obs)
        out = stacked.sample_seeds(params.detach().numpy(), [np.random.default_rng(k) for k in range(S)])
        actions = torch.as_tensor(out.action)
        log_prob, entropy = stacked.log_prob(params, actions), stacked.entropy(params)
        for k, single in enumerate(singles):
            p = single(obs[k])
            # Seed k's draw is exactly a single run's draw from the same generator.
            alone = single.sample(p.detach().numpy(), np.random.default_rng(k))
            assert np.array_equal(alone.action, out.action[k]) or np.allclose(alone.action, out.action[k], atol=1e-6)
            torch.testing.assert_close(log_prob[k], single.log_prob(p, actions[k]))
            torch.testing.assert_close(entropy[k], single.entropy(p))


def test_value_net_and_estimator_stack():
    torch.manual_seed(3)
    values = [ValueNet(4, [8], "tanh", True) for _ in range(S)]
    stacked = stack_modules(values)
    obs = torch.randn(S, B, 4)
    assert stacked(obs).shape == (S, B)
    policy = CategoricalPolicy(4, 3, [8], "tanh", True)
    estimators = []
    for k in range(S):
        estimator = RelaxEstimator(temperature_init=0.5 + k)
        estimator.bind(policy, 4, gym.spaces.Discrete(3))
        estimators.append(estimator)
    stacked_estimator = stack_modules(estimators)
    assert stacked_estimator.log_temperature.shape == (S, 1, 1)
    assert stacked_estimator.cv.net.num_seeds == S
    # Its optimizer was rebuilt on the stacked parameters: one (S, P) row per seed.
    assert stacked_estimator._flat_phi.data.shape[0] == S
    assert stacked_estimator.scalar(stacked_estimator.log_temperature.exp()) == pytest.approx([0.5, 1.5, 2.5])


def test_flat_parameters_rows_are_single_run_vectors_and_clip_per_seed():
    singles = mlps()
    stacked = stack_modules(singles)
    flat = FlatParameters(list(stacked.parameters()), num_seeds=S)
    for k, single in enumerate(singles):
        torch.testing.assert_close(flat.data[k], FlatParameters(list(single.parameters())).data)
    grads = [torch.zeros_like(p) for p in stacked.parameters()]
    grads[0][0] += 10.0  # seed 0: a large gradient; the others zero
    flat.set_grad(grads)
    norms = flat.clip_grad_norm_(1.0)
    assert norms[0] == pytest.approx(10.0 * grads[0][0].numel() ** 0.5) and norms[1:] == [0.0, 0.0]
    assert torch.linalg.vector_norm(flat.grad[0]).item() == pytest.approx(1.0, rel=1e-5)
