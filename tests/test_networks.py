"""Policies: log-probs and entropies match torch.distributions, NumPy acting matches torch, sampling
follows pi (statistically), Box actions are clipped for the env but stored unclipped."""

import gymnasium as gym
import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from rl_relax.errors import ConfigError
from rl_relax.networks import MLP, CategoricalPolicy, GaussianPolicy, make_policy

CFG = OmegaConf.create({"hidden_sizes": [16, 16], "activation": "tanh", "ortho_init": True, "log_std_init": -0.5})


@pytest.fixture
def categorical():
    torch.manual_seed(0)
    policy = make_policy(CFG, gym.spaces.Box(-1, 1, (3,)), gym.spaces.Discrete(4))
    policy.net.layers[-1].weight.data.normal_()  # move away from the near-uniform init
    return policy


@pytest.fixture
def gaussian():
    torch.manual_seed(0)
    return make_policy(CFG, gym.spaces.Box(-1, 1, (3,)), gym.spaces.Box(-2.0, 2.0, (2,)))


def test_categorical_log_prob_and_entropy_match_torch_distributions(categorical):
    obs = torch.randn(32, 3)
    params = categorical(obs)
    actions = torch.randint(0, 4, (32,))
    dist = categorical.distribution(params)
    torch.testing.assert_close(categorical.log_prob(params, actions), dist.log_prob(actions))
    torch.testing.assert_close(categorical.entropy(params), dist.entropy())


def test_gaussian_log_prob_and_entropy_match_torch_distributions(gaussian):
    obs = torch.randn(32, 3)
    params = gaussian(obs)
    actions = torch.randn(32, 2) * 3
    dist = gaussian.distribution(params)
    torch.testing.assert_close(gaussian.log_prob(params, actions), dist.log_prob(actions))
    torch.testing.assert_close(gaussian.entropy(params), dist.entropy())


@pytest.mark.parametrize("activation", ["tanh", "relu", "elu", "gelu"])
def test_numpy_forward_matches_torch_forward(activation):
    torch.manual_seed(1)
    net = MLP(5, [32, 32], 3, activation=activation)
    obs = np.random.default_rng(0).standard_normal((10, 5)).astype(np.float32)
    expected = net(torch.from_numpy(obs)).detach().numpy()
    got = net.forward_numpy(obs)
    if activation == "gelu":  # no NumPy version: the caller falls back to torch
        assert got is None
        return
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)
    with torch.no_grad():  # the NumPy views follow in-place parameter updates
        for p in net.parameters():
            p.add_(0.1)
    np.testing.assert_allclose(net.forward_numpy(obs), net(torch.from_numpy(obs)).detach().numpy(), rtol=1e-5,
                               atol=1e-6)  # fmt: skip


def test_numpy_forward_follows_a_replaced_parameter_in_any_layer():
    """The NumPy views are refreshed when any layer's parameter is replaced or moved, not only the first."""
    torch.manual_seed(3)
    net = MLP(3, [8, 8], 2)
    obs = np.random.default_rng(0).normal(size=(4, 3)).astype(np.float32)
    net.forward_numpy(obs)  # builds the views
    net.layers[2].weight = torch.nn.Parameter(torch.zeros(2, 8))
    np.testing.assert_allclose(net.forward_numpy(obs), np.broadcast_to(net.layers[2].bias.detach().numpy(), (4, 2)))
    net.layers[1].bias.data = torch.full((8,), 5.0)
    np.testing.assert_allclose(net.forward_numpy(obs), net(torch.from_numpy(obs)).detach().numpy(), rtol=1e-5)


def test_parameters_fixed_checks_the_numpy_views_on_entry_and_per_call_again_after_the_block():
    """Inside ``parameters_fixed`` the views are checked once, on entry (a rollout replaces nothing); a
    parameter replaced before the block, or after it, is seen; values changed in place are always seen."""
    torch.manual_seed(3)
    net = MLP(3, [8, 8], 2)
    obs = np.random.default_rng(0).normal(size=(4, 3)).astype(np.float32)
    net.forward_numpy(obs)  # builds the views
    net.layers[2].weight = torch.nn.Parameter(torch.zeros(2, 8))  # replaced before the block: seen on entry
    with net.parameters_fixed():
        np.testing.assert_allclose(net.forward_numpy(obs), np.broadcast_to(net.layers[2].bias.detach().numpy(), (4, 2)))
        with torch.no_grad():
            net.layers[2].bias.add_(1.0)  # in place: the views share the storage
        np.testing.assert_allclose(net.forward_numpy(obs), np.broadcast_to(net.layers[2].bias.detach().numpy(), (4, 2)))
        with net.parameters_fixed():  # nested blocks end with the outer one
            pass
        net.layers[2].bias = torch.nn.Parameter(torch.full((2,), 7.0))  # inside the block: not seen before its end
        assert not np.allclose(net.forward_numpy(obs), 7.0)
    np.testing.assert_allclose(net.forward_numpy(obs), 7.0)  # after the block: checked on every call again
    net.layers[0].weight = torch.nn.Parameter(torch.ones(8, 3))
    np.testing.assert_allclose(net.forward_numpy(obs), net(torch.from_numpy(obs)).detach().numpy(), rtol=1e-5)


def test_mlp_forward_follows_every_way_parameters_are_replaced():
    """forward reads the layers' live parameters: after load_state_dict, re-registering a Parameter,
    moving the data (the learner's flat buffer) and inside torch.func.functional_call."""
    torch.manual_seed(2)
    net, other = MLP(3, [8], 2), MLP(3, [8], 2)
    x = torch.randn(6, 3)
    net.load_state_dict(other.state_dict())
    torch.testing.assert_close(net(x), other(x))
    net.layers[1].weight = torch.nn.Parameter(torch.zeros(2, 8))
    torch.testing.assert_close(net(x), net.layers[1].bias.expand(6, 2))
    net.layers[1].bias.data = torch.full((2,), 3.0)
    torch.testing.assert_close(net(x), torch.full((6, 2), 3.0))
    zeros = {name: torch.zeros_like(p) for name, p in net.named_parameters()}
    assert torch.func.functional_call(net, zeros, (x,)).abs().max().item() == 0.0
    torch.testing.assert_close(net(x), torch.full((6, 2), 3.0))  # restored afterwards


def test_gumbel_max_sampling_follows_the_policy(categorical):
    """Empirical action frequencies match softmax(logits) within 4 standard errors per action."""
    obs = np.zeros((1, 3), dtype=np.float32) + 0.3
    n = 40_000
    params = np.repeat(categorical.params_numpy(obs), n, axis=0)
    actions = categorical.sample(params, np.random.default_rng(0)).action
    freq = np.bincount(actions, minlength=4) / n
    probs = torch.softmax(torch.from_numpy(params[0]), -1).numpy()
    se = np.sqrt(probs * (1 - probs) / n)
    assert np.all(np.abs(freq - probs) < 4 * se), (freq, probs)
    # Power: the frequencies are clearly NOT uniform, so the check above can fail.
    assert np.any(np.abs(freq - 0.25) > 4 * np.sqrt(0.25 * 0.75 / n))


def test_gaussian_action_is_stored_unclipped_and_clipped_for_the_env(gaussian):
    params = np.full((1000, 2), 1.5, dtype=np.float32)
    out = gaussian.sample(params, np.random.default_rng(0))
    np.testing.assert_allclose(out.action, params + np.exp(-0.5) * out.noise["eps"], rtol=1e-5, atol=1e-6)
    assert out.action.max() > 2.0  # some samples fall outside the bounds ...
    env_action = gaussian.env_action(out.action)
    assert env_action.max() <= 2.0 and env_action.min() >= -2.0  # ... and the env never sees them


def test_deterministic_action_is_the_mode(categorical, gaussian):
    obs = np.random.default_rng(0).standard_normal((5, 3)).astype(np.float32)
    assert (categorical.act(obs, np.random.default_rng(0), deterministic=True).action
            == categorical.params_numpy(obs).argmax(-1)).all()  # fmt: skip
    np.testing.assert_allclose(gaussian.act(obs, np.random.default_rng(0), deterministic=True).action,
                               gaussian.params_numpy(obs))  # fmt: skip


def test_policy_kind_follows_the_action_space():
    box = gym.spaces.Box(-1, 1, (3,))
    assert isinstance(make_policy(CFG, box, gym.spaces.Discrete(2)), CategoricalPolicy)
    assert isinstance(make_policy(CFG, box, gym.spaces.Box(-1, 1, (1,))), GaussianPolicy)
    with pytest.raises(ConfigError, match="activation"):
        MLP(3, [8], 1, activation="swish")


def test_numpy_tanh_matches_torch_tanh_to_second_order():
    """Large CPU tanh goes through NumPy (a speed-up on our machines); value, gradient and the gradient's
    gradient (which the control variate's reference computation needs) must equal torch.tanh's."""
    from rl_relax.networks import NUMPY_TANH_MIN_ELEMENTS, tanh

    torch.manual_seed(0)
    x = torch.randn(NUMPY_TANH_MIN_ELEMENTS + 7, requires_grad=True)
    ours = tanh(x)
    assert ours.grad_fn is not None and "NumpyTanh" in type(ours.grad_fn).__name__  # the NumPy path is taken
    reference_x = x.detach().clone().requires_grad_()
    reference = torch.tanh(reference_x)
    weight = torch.randn_like(x)
    (g,) = torch.autograd.grad(ours, x, weight, create_graph=True)
    (g_ref,) = torch.autograd.grad(reference, reference_x, weight, create_graph=True)
    (gg,) = torch.autograd.grad(g.square().sum(), x)
    (gg_ref,) = torch.autograd.grad(g_ref.square().sum(), reference_x)
    torch.testing.assert_close(ours, reference, atol=2e-7, rtol=0)
    torch.testing.assert_close(g, g_ref, atol=2e-6, rtol=1e-5)
    torch.testing.assert_close(gg, gg_ref, atol=2e-5, rtol=1e-4)
    assert tanh(torch.randn(8)).grad_fn is None  # small tensors: torch.tanh itself
