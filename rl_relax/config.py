"""Checks on the composed config, so bad input fails before anything runs, with the fix named.

Every key documented in ``configs/train.yaml``, ``configs/env/*.yaml`` and ``configs/estimator/*.yaml``
has an entry in :data:`SCHEMA` (or :data:`ESTIMATOR_SCHEMA`): its type, its range and an example
value. :func:`validate` checks them all and raises :class:`ConfigError` with one line
``<key>=<value> must be <requirement>. Fix: e.g. <key>=<example>.``. Estimator keys are also checked
against the estimator class's constructor, so a key another estimator needs (an experiment config
combined with another ``estimator=``) is named instead of failing inside the constructor.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable, Sequence
from typing import Any

import torch
from omegaconf import DictConfig, ListConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from rl_relax.envs import VECTORIZATION_MODES
from rl_relax.errors import ConfigError
from rl_relax.networks import ACTIVATIONS
from rl_relax.optim import OPTIMIZERS

DEVICES = ("auto", "cpu", "cuda")
MAX_SEED = 2**62  # seeds of env i and of resets (seed + step) must stay valid 64-bit seeds
MAX_COUNT = 2**62
MAX_NUM_ENVS = 65_536
MAX_ROLLOUT = 2**24  # env.num_envs * learner.num_steps transitions held in memory per update


def experiment_directory(experiment: str | None) -> str:
    """``<experiment>/`` for a run of ``experiment=<name>``, nothing without one: the default run directory
    (``hydra.run.dir`` in configs/train.yaml) is ``runs/[<experiment>/]<run_name>/<date_time>``, so two
    experiments with the same env, estimator and seed never share a TensorBoard run name."""
    return f"{experiment}/" if experiment else ""


# Registered on import: Hydra resolves hydra.run.dir after importing rl_relax.train (and so this module).
if not OmegaConf.has_resolver("rl_relax.experiment_dir"):
    OmegaConf.register_new_resolver("rl_relax.experiment_dir", experiment_directory)

# A check returns None when the value is fine, else the requirement: "must be a positive integer".
Check = Callable[[Any], str | None]


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def number(
    lo: float | None = None,
    hi: float | None = None,
    lo_open: bool = False,
    hi_open: bool = False,
    integer: bool = False,
    nullable: bool = False,
    what: str | None = None,
) -> Check:
    """A finite number (an integer if ``integer``) in the given interval; ``what`` overrides the wording."""
    if what is None:
        noun = "an integer" if integer else "a number"
        if lo == 0 and lo_open and hi is None:
            what = "a positive integer" if integer else "a positive number"
        elif lo == 0 and not lo_open and hi is None:
            what = f"{noun} >= 0"
        elif lo is not None and hi is not None:
            what = f"in {'(' if lo_open else '['}{lo:g}, {hi:g}{')' if hi_open else ']'}"
        elif lo is not None:
            what = f"{noun} {'>' if lo_open else '>='} {lo:g}"
        else:
            what = noun
        if nullable:
            what += " (or null)"

    def check(value: Any) -> str | None:
        if value is None and nullable:
            return None
        if not _is_number(value) or not math.isfinite(value):
            return f"must be {what}"
        if integer and not float(value).is_integer():
            return f"must be {what}"
        if lo is not None and (value <= lo if lo_open else value < lo):
            return f"must be {what}"
        if hi is not None and (value >= hi if hi_open else value > hi):
            return f"must be {what}"
        return None

    return check


def positive(integer: bool = False, hi: float | None = None, nullable: bool = False) -> Check:
    base = number(0, None, lo_open=True, integer=integer, nullable=nullable)
    if hi is None:
        return base

    def check(value: Any) -> str | None:
        problem = base(value)
        if problem is None and value is not None and value > hi:
            return f"must be at most {hi:,.0f}"
        return problem

    return check


def choice(options: Sequence[str]) -> Check:
    def check(value: Any) -> str | None:
        return None if isinstance(value, str) and value in options else f"is not one of {', '.join(options)}"

    return check


def nullable_choice(options: Sequence[str]) -> Check:
    def check(value: Any) -> str | None:
        ok = value is None or (isinstance(value, str) and value in options)
        return None if ok else f"is not one of {', '.join(options)} (or null)"

    return check


def boolean(value: Any) -> str | None:
    return None if isinstance(value, bool) else "must be true or false"


def string(nullable: bool = False) -> Check:
    def check(value: Any) -> str | None:
        if value is None and nullable:
            return None
        ok = isinstance(value, str) and value.strip() != ""
        return None if ok else "must be a non-empty string" + (" (or null)" if nullable else "")

    return check


def mapping(value: Any) -> str | None:
    return None if value is None or isinstance(value, dict) else "must be a mapping such as {max_episode_steps: 200}"


def layer_sizes(value: Any) -> str | None:
    ok = isinstance(value, list) and all(_is_number(v) and float(v).is_integer() and 0 < v <= 65_536 for v in value)
    return None if ok else "must be a list of positive layer widths such as [64, 64]"


def cv_inputs(value: Any) -> str | None:
    options = ("state", "value", "time", "dist_params")
    ok = isinstance(value, list) and all(v in options for v in value) and len(set(value)) == len(value)
    return None if ok else f"must be a list of distinct inputs from {', '.join(options)}"


def betas(value: Any) -> str | None:
    ok = isinstance(value, list) and len(value) == 2 and all(_is_number(b) and 0.0 <= b < 1.0 for b in value)
    return None if ok else "must be two numbers in [0, 1) such as [0.9, 0.999]"


# key -> (check, example of a valid value for the Fix)
SCHEMA: dict[str, tuple[Check, str]] = {
    "seed": (number(0, MAX_SEED, hi_open=True, integer=True, what="an integer in [0, 2^62)"), "0"),
    "num_seeds": (positive(integer=True, hi=4096), "8"),
    "device": (choice(DEVICES), "auto"),
    "total_timesteps": (positive(integer=True, hi=MAX_COUNT), "200000"),
    "torch_threads": (positive(integer=True, hi=1024), "1"),
    "torch_deterministic": (boolean, "false"),
    "stop_when_solved": (boolean, "false"),
    "sweep_objective": (choice(("final_return", "neg_episodes_to_solve")), "final_return"),
    "env.id": (string(), "CartPole-v1 (or env=CartPole)"),
    "env.num_envs": (positive(integer=True, hi=MAX_NUM_ENVS), "8"),
    "env.vectorization": (choice(VECTORIZATION_MODES), "auto"),
    "env.make_kwargs": (mapping, '"{max_episode_steps: 200}" (or null)'),
    "env.import_module": (string(nullable=True), "my_package.envs (or null)"),
    "env.normalize_observation": (boolean, "false"),
    "env.normalize_reward": (boolean, "false"),
    "env.solved_threshold": (number(nullable=True), "195 (or null for the env's reward threshold)"),
    "env.solved_window": (positive(integer=True, hi=MAX_COUNT), "100"),
    "learner.num_steps": (positive(integer=True, hi=MAX_ROLLOUT), "5"),
    "learner.gamma": (number(0, 1, lo_open=True), "0.99"),
    "learner.gae_lambda": (number(0, 1), "0.95"),
    "learner.normalize_advantage": (boolean, "false"),
    "learner.ent_coef": (number(0), "0.0"),
    "learner.vf_coef": (number(0), "0.5"),
    "learner.max_grad_norm": (positive(nullable=True), "0.5 (or null for no clipping)"),
    "learner.optimizer": (choice(OPTIMIZERS), "rmsprop"),
    "learner.lr": (positive(), "7e-4"),
    "learner.lr_schedule": (choice(("constant", "linear")), "constant"),
    "learner.rmsprop_alpha": (number(0, 1, hi_open=True), "0.99"),
    "learner.eps": (number(0), "1e-5"),
    "learner.adam_betas": (betas, "[0.9,0.999]"),
    "learner.batch": (choice(("steps", "episodes")), "steps"),
    "learner.episodes_per_update": (positive(integer=True, hi=1_000_000), "1"),
    "variance.ema_decay": (number(0, 1, lo_open=True, hi_open=True), "0.99"),
    "variance.interval_steps": (number(0, MAX_COUNT, integer=True, what="an integer >= 0 (0 = off)"), "0"),
    "variance.num_batches": (number(2, 1_000_000, integer=True, what="an integer >= 2"), "100"),
    "variance.anatomy_interval_steps": (number(0, MAX_COUNT, integer=True, what="an integer >= 0 (0 = off)"), "0"),
    "variance.anatomy_states": (number(2, 1_000_000, integer=True, what="an integer >= 2"), "64"),
    "variance.anatomy_actions": (number(3, 1_000_000, integer=True, what="an integer >= 3"), "8"),
    "variance.anatomy_continuations": (number(2, 1_000_000, integer=True, what="an integer >= 2"), "8"),
    "eval.interval_steps": (number(0, MAX_COUNT, integer=True, what="an integer >= 0 (0 = off)"), "10000"),
    "eval.episodes": (positive(integer=True, hi=1_000_000), "10"),
    "logging.interval_steps": (positive(integer=True, hi=MAX_COUNT), "2000"),
    "logging.progress": (choice(("auto", "always", "never")), "auto"),
    "logging.progress_interval_s": (positive(), "30"),
    "checkpoint.interval_steps": (positive(integer=True, hi=MAX_COUNT), "100000"),
    "checkpoint.keep_last": (positive(integer=True, hi=1_000_000), "2"),
    "checkpoint.resume": (boolean, "true"),
}
for _net in ("policy", "value"):
    SCHEMA[f"{_net}.hidden_sizes"] = (layer_sizes, "[64,64]")
    SCHEMA[f"{_net}.activation"] = (choice(tuple(ACTIVATIONS)), "tanh")
    SCHEMA[f"{_net}.ortho_init"] = (boolean, "true")
SCHEMA["policy.log_std_init"] = (number(-20, 5), "0.0")
SCHEMA["value.time_input"] = (boolean, "false")
SCHEMA["value.horizon_aware"] = (boolean, "false")
SCHEMA["value.steps"] = (positive(integer=True, hi=10_000), "1")
SCHEMA["value.lr"] = (positive(nullable=True), "1e-3 (or null for learner.lr)")
SCHEMA["value.optimizer"] = (nullable_choice(OPTIMIZERS), "adam (or null for learner.optimizer)")
SCHEMA["run_name"] = (string(), "my_run")  # last: it interpolates env.id, estimator.name and seed

# Keys of configs/estimator/*.yaml, checked when the estimator config has them.
ESTIMATOR_SCHEMA: dict[str, tuple[Check, str]] = {
    "estimator._target_": (string(), "rl_relax.estimators.relax.RelaxEstimator (or estimator=relax)"),
    "estimator.name": (string(), "relax"),
    "estimator.hidden_sizes": (layer_sizes, "[64,64]"),
    "estimator.activation": (choice(tuple(ACTIVATIONS)), "relu"),
    "estimator.cv_lr": (positive(), "1e-3"),
    "estimator.cv_steps": (positive(integer=True, hi=10_000), "1"),
    "estimator.cv_objective": (choice(("variance", "dist_params")), "variance"),
    "estimator.cv_adam_betas": (betas, "[0.9,0.999]"),
    "estimator.temperature_init": (positive(), "1.0"),
    "estimator.learn_temperature": (boolean, "true"),
    "estimator.cv_warmup_steps": (number(0, 1_000_000, integer=True, what="an integer in [0, 1000000]"), "0"),
    "estimator.cv_lr_schedule": (choice(("constant", "linear")), "constant"),
    "estimator.cv_inputs": (cv_inputs, "[state]"),
    "estimator.cv_time_limit": (positive(integer=True, hi=MAX_COUNT, nullable=True), "500 (or null)"),
    "estimator.state_baseline": (choice(("regression", "variance")), "regression"),
    "estimator.conditional_sampler": (choice(("exact", "biased_released_code")), "exact"),
    "estimator.cv_gap_interval": (number(0, MAX_COUNT, integer=True, what="an integer >= 0 (0 = off)"), "0"),
    "estimator.cv_gap_steps": (positive(integer=True, hi=1_000_000), "100"),
    "estimator.cv_term_norms_interval": (number(0, MAX_COUNT, integer=True, what="an integer >= 0 (0 = off)"), "0"),
}


def documented_keys(cfg: DictConfig) -> list[str]:
    """The keys of ``cfg`` that :func:`validate` checks (every leaf of the composed config)."""
    return [key for key in _leaves(cfg) if key in SCHEMA or key in ESTIMATOR_SCHEMA]


def _leaves(cfg: Any, prefix: str = "") -> list[str]:
    keys = []
    for key in cfg:
        path = f"{prefix}.{key}" if prefix else str(key)
        node = cfg._get_node(key)
        if isinstance(node, DictConfig) and path not in SCHEMA and not node._is_none():
            keys += _leaves(node, path)
        else:
            keys.append(path)
    return keys


def _has(cfg: DictConfig, key: str) -> bool:
    node: Any = cfg
    for part in key.split("."):
        if not isinstance(node, DictConfig):
            return False
        node = node._get_node(part, throw_on_missing_key=False)
        if node is None:
            return False
    return True


def _value(cfg: DictConfig, key: str) -> Any:
    try:
        value = OmegaConf.select(cfg, key, throw_on_missing=True)
    except OmegaConfBaseException as exc:
        message = " ".join(str(exc).split("\n")[0].split())
        if "Missing mandatory value" in str(exc):
            raise ConfigError(f"{key} is not set. Fix: e.g. {key}={SCHEMA.get(key, (None, '...'))[1]}.") from None
        raise ConfigError(f"{key} cannot be resolved: {message}. Fix: check its interpolation.") from None
    if isinstance(value, DictConfig | ListConfig):
        value = OmegaConf.to_container(value, resolve=True)
    return value


def _check(cfg: DictConfig, key: str, check: Check, example: str) -> None:
    value = _value(cfg, key)
    problem = check(value)
    if problem is not None:
        raise ConfigError(f"{key}={_show(value)} {problem}. Fix: e.g. {key}={example}.")


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def validate(cfg: Any) -> None:
    """Raise :class:`ConfigError` on the first invalid value (one line: key, value, fix)."""
    for key, (check, example) in SCHEMA.items():
        if not _has(cfg, key):
            continue  # an optional key this config does not use
        _check(cfg, key, check, example)
    rollout = int(cfg.env.num_envs) * int(cfg.learner.num_steps)
    if rollout > MAX_ROLLOUT:
        raise ConfigError(
            f"learner.num_steps={cfg.learner.num_steps} with env.num_envs={cfg.env.num_envs} gives {rollout:,} "
            f"transitions per update, above the {MAX_ROLLOUT:,} a rollout buffer may hold. "
            "Fix: e.g. learner.num_steps=5."
        )
    validate_estimator(cfg.estimator)
    validate_episode_batches(cfg)
    if cfg.estimator.get("state_baseline") == "variance" and cfg.learner.normalize_advantage:
        raise ConfigError(
            "estimator.state_baseline=variance replaces the advantages' state baseline V(s) by b_phi(s), so there "
            "are no advantages for learner.normalize_advantage=true to standardise. "
            "Fix: learner.normalize_advantage=false (or estimator.state_baseline=regression)."
        )


def validate_episode_batches(cfg: DictConfig) -> None:
    """``learner.batch=episodes`` (complete episodes of one env per update): what it cannot be combined with."""
    if cfg.learner.get("batch", "steps") != "episodes":
        return
    if int(cfg.env.num_envs) != 1:
        raise ConfigError(
            f"learner.batch=episodes fills each update with complete episodes of one env, but env.num_envs="
            f"{cfg.env.num_envs}. Fix: env.num_envs=1 (learner.episodes_per_update=E puts E episodes in an update)."
        )
    if int(cfg.get("num_seeds", 1)) > 1:
        raise ConfigError(
            f"learner.batch=episodes cannot train num_seeds={cfg.num_seeds} seeds in one process: each seed's "
            "episodes end at different steps, and a seed group steps every seed in lockstep. Fix: num_seeds=1, "
            "one process per seed (e.g. a multirun over seed='range(10)')."
        )


def validate_estimator(estimator_cfg: DictConfig) -> None:
    """The estimator's documented keys, and that its class accepts every key it is given."""
    for key in estimator_cfg:
        full = f"estimator.{key}"
        if full in ESTIMATOR_SCHEMA:
            check, example = ESTIMATOR_SCHEMA[full]
            _check(OmegaConf.create({"estimator": estimator_cfg}), full, check, example)
    if "_target_" not in estimator_cfg:
        raise ConfigError("estimator._target_ is not set. Fix: pick a shipped estimator, e.g. estimator=baseline.")
    try:
        import hydra.utils

        cls = hydra.utils.get_class(estimator_cfg._target_)
    except Exception as exc:
        raise ConfigError(
            f"estimator._target_={estimator_cfg._target_!r} cannot be imported ({type(exc).__name__}). "
            "Fix: e.g. estimator=baseline, or a class path of an installed module."
        ) from None
    accepted = _keyword_names(cls)
    if accepted is None:
        return  # the constructor takes any keyword: nothing to check
    for key in estimator_cfg:
        if key != "_target_" and key not in accepted:
            value = _value(OmegaConf.create({"e": estimator_cfg}), f"e.{key}")
            raise ConfigError(
                f"estimator.{key}={_show(value)} is not a setting of estimator {estimator_cfg.get('name')!r} "
                f"(its settings: {', '.join(sorted(accepted))}); an experiment= config made for another estimator "
                f"sets it. Fix: drop the estimator= override, or remove estimator.{key}."
            )


def _keyword_names(cls: type) -> set[str] | None:
    """Constructor keywords of ``cls``, following ``**kwargs`` up to the base classes that take them;
    None if the chain ends in a constructor that takes any keyword."""
    names: set[str] = set()
    for klass in cls.__mro__:
        init = klass.__dict__.get("__init__")
        if init is None:
            continue
        if klass.__module__.startswith(("torch", "builtins")):
            return names
        try:
            params = list(inspect.signature(init).parameters.values())[1:]
        except (TypeError, ValueError):
            return None
        names |= {p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}
        if not any(p.kind == p.VAR_KEYWORD for p in params):
            return names
    return None


#: ``device=auto`` picks a GPU for groups of at least this many seeds (README "Many seeds in one process").
GPU_MIN_SEEDS = 32


def resolve_device(requested: str, num_seeds: int = 1) -> tuple[torch.device, str]:
    """The torch device for networks and updates, and a sentence explaining the choice.

    ``auto`` picks the CPU for one agent (an A2C update on small MLPs is a few hundred tiny kernels,
    latency-bound), and a GPU for a group of at least :data:`GPU_MIN_SEEDS` seeds, whose batched
    update does enough arithmetic per kernel to gain from it.
    """
    if requested == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(
                "device=cuda but torch sees no CUDA GPU (CPU build or no driver). Fix: device=cpu or device=auto."
            )
        return torch.device("cuda"), "device=cuda as requested"
    if requested == "cpu":
        return torch.device("cpu"), "device=cpu as requested"
    why = "an A2C update on small MLPs is latency-bound, so a GPU does not speed it up; use device=cuda to override"
    if num_seeds > 1:
        why = (f"a group of {num_seeds} seeds is below {GPU_MIN_SEEDS}, where a GPU starts to pay off; "
               "use device=cuda to override")  # fmt: skip
    if not torch.cuda.is_available():
        why = "no CUDA GPU is available"
    elif num_seeds >= GPU_MIN_SEEDS:
        return torch.device("cuda"), f"device=auto chose cuda: a group of {num_seeds} seeds (>= {GPU_MIN_SEEDS})"
    return torch.device("cpu"), f"device=auto chose cpu: {why}"
