"""Every documented config key, fuzzed with wrong types and out-of-range values: each one ends in a
one-line ConfigError naming the key, the value and the fix, before anything runs (no traceback,
no hang, no silent truncation)."""

from __future__ import annotations

import copy
import functools
import math

import pytest
from omegaconf import DictConfig, OmegaConf

from rl_relax.config import ESTIMATOR_SCHEMA, SCHEMA, _leaves
from rl_relax.envs import shipped_env_options
from rl_relax.errors import ConfigError
from rl_relax.trainer import Trainer
from tests.conftest import compose_config

# One config per estimator (on an env it supports): together they hold every documented key.
CONFIGS = {"baseline": ("CartPole", "baseline"), "relax": ("CartPole", "relax"), "lax": ("Pendulum", "lax")}

NAN, INF = math.nan, math.inf
WRONG_TYPES = {
    "bool": ["yes", 2, 0.5, [1], None],
    "int": ["abc", 1.5, -1, NAN, INF, [1], True, None, 10**30],
    "float": ["abc", NAN, INF, -INF, [1], True, None],
    "choice": ["nope", 3, 1.5, [1], None, True],
    "string": [3, [1], None, True, ""],
    "list": ["abc", 5, [-1], ["a"], [1.5], None, {"a": 1}],
    "mapping": [5, "abc", [1], True],
}
# Out of the documented range (the type is right).
OUT_OF_RANGE = {
    "seed": [1.5, -1, 2**63], "total_timesteps": [0, 2**63], "env.num_envs": [0, 10**6],
    "learner.num_steps": [0, 10**12], "learner.gamma": [0, 1.5, -0.1], "learner.gae_lambda": [-0.1, 2],
    "learner.lr": [0, -1e-3], "learner.eps": [-1e-5], "learner.ent_coef": [-0.01], "learner.vf_coef": [-0.5],
    "learner.max_grad_norm": [0, -1], "learner.rmsprop_alpha": [1.0, 2, -0.5], "variance.ema_decay": [0, 1, 1.5],
    "variance.interval_steps": [-1000], "variance.num_batches": [1, 0], "checkpoint.keep_last": [0],
    "checkpoint.interval_steps": [0], "logging.interval_steps": [0], "logging.progress_interval_s": [0, -5],
    "env.solved_window": [0], "torch_threads": [0], "policy.log_std_init": [100, -1e9],
    "policy.hidden_sizes": [[0], [64, -2]], "value.hidden_sizes": [[0]], "learner.adam_betas": [[0.9], [1.0, 0.5]],
    "estimator.cv_lr": [0, -1], "estimator.cv_steps": [0, 1.5], "estimator.temperature_init": [0, -1],
    "estimator.cv_adam_betas": [[0.9, 1.0]], "env.import_module": ["no_such_module_xyz"],
    "estimator._target_": ["no.such.Estimator"], "estimator.cv_time_limit": [0], "estimator.cv_gap_steps": [0],
    "estimator.cv_inputs": [["state", "state"]], "value.steps": [0, 10**6], "value.lr": [0, -1e-3],
    "learner.episodes_per_update": [0, 10**7], "estimator.conditional_sampler": ["biased", "released_code"],
}  # fmt: skip
# Values of the generic lists that are legal for a key (so not fuzz cases for it).
LEGAL = {"logging.progress_interval_s": [1.5, 10**30], "learner.max_grad_norm": [None],
         "env.solved_threshold": [None], "env.import_module": [None], "policy.log_std_init": [-1],
         "value.lr": [None], "value.optimizer": [None],
         "estimator.cv_time_limit": [None]}  # fmt: skip
CHOICES = {"device", "sweep_objective", "env.vectorization", "learner.optimizer", "learner.lr_schedule",
           "logging.progress", "policy.activation", "value.activation", "value.optimizer", "estimator.activation",
           "estimator.cv_objective", "estimator.cv_lr_schedule", "estimator.state_baseline", "learner.batch",
           "estimator.conditional_sampler"}  # fmt: skip
NULLABLE_KIND = {"env.solved_threshold": "float", "env.import_module": "string", "env.make_kwargs": "mapping",
                 "value.lr": "float", "estimator.cv_time_limit": "int"}  # fmt: skip


def kind_of(key: str, value) -> str:
    if key in CHOICES:
        return "choice"
    if key in NULLABLE_KIND:
        return NULLABLE_KIND[key]
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "int"
    if isinstance(value, float):
        return "float"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "list"
    raise AssertionError(f"no fuzz kind for {key}={value!r}")


@functools.cache
def base_config(name: str) -> DictConfig:
    env, estimator = CONFIGS[name]
    return compose_config(f"env={env}", f"estimator={estimator}")


def fuzz_cases() -> list[tuple[str, str, object]]:
    cases = []
    for name in CONFIGS:
        cfg = base_config(name)
        for key in _leaves(cfg):
            if name != "baseline" and not key.startswith("estimator."):
                continue  # the shared keys are fuzzed once, on the baseline config
            value = OmegaConf.to_container(cfg, resolve=True)
            for part in key.split("."):
                value = value[part]
            legal = LEGAL.get(key, [])
            bad = [v for v in WRONG_TYPES[kind_of(key, value)] + OUT_OF_RANGE.get(key, []) if v not in legal]
            cases += [(name, key, v) for v in bad]
    return cases


CASES = fuzz_cases()


def test_every_documented_key_of_every_shipped_config_has_a_check():
    configs = [compose_config(f"env={env}", f"estimator={est}") for env, est in CONFIGS.values()]
    configs += [compose_config(f"env={option}") for option in shipped_env_options()]
    configs += [compose_config("experiment=CartPole_relax"), compose_config("experiment=paper_InvertedPendulum")]
    unchecked = {key for cfg in configs for key in _leaves(cfg)} - set(SCHEMA) - set(ESTIMATOR_SCHEMA)
    assert not unchecked
    fuzzed = {key for _, key, _ in CASES}
    assert fuzzed == {key for cfg in configs for key in _leaves(cfg)}  # every key has fuzz cases
    assert len(CASES) > 300


@pytest.mark.parametrize(("config", "key", "value"), CASES, ids=[f"{c}-{k}={v!r}" for c, k, v in CASES])
def test_every_bad_value_of_every_key_is_one_line_naming_key_value_and_fix(config, key, value, tmp_path):
    cfg = copy.deepcopy(base_config(config))
    OmegaConf.update(cfg, key, value, merge=False)
    with pytest.raises(ConfigError) as info:
        Trainer(cfg, tmp_path / "run").env.close()
    message = str(info.value)
    assert "\n" not in message and "Fix" in message, message
    assert key in message, message


@pytest.mark.parametrize("value", [1.5, "3", 2.0**70])
def test_seed_must_be_an_integer(value, tmp_path):
    cfg = compose_config()
    cfg.seed = value
    with pytest.raises(ConfigError, match=r"seed=.* must be an integer"):
        Trainer(cfg, tmp_path / "run")


def test_an_integral_float_seed_is_accepted_as_that_integer(tmp_path):
    cfg = compose_config("total_timesteps=40")
    cfg.seed = 3.0
    trainer = Trainer(cfg, tmp_path / "run")
    assert trainer.meta["seed"] == 3
    trainer.env.close()
