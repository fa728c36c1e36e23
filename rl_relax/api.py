"""Train from Python with the command line's config system: ``train_agent(env="CartPole", ...)``.

:func:`train_agent` composes the same Hydra config as ``python -m rl_relax.train`` (the package's
``configs/``, the same defaults, the same ``key=value`` overrides, the same errors for unknown keys
and options), trains in this process and returns the summary and the run directory. The run
directory has the command line's layout (``.hydra/config.yaml``, ``train.log``, TensorBoard events,
``checkpoints/``, ``summary.json``), so ``python -m rl_relax.evaluate``, ``python -m rl_relax.summarize``,
TensorBoard and :func:`rl_relax.load_agent` read it; re-using a run directory resumes, as on the
command line.

Settings are keyword arguments; a nested key uses ``__`` for the dot (``learner__lr=1e-3`` is
``learner.lr=1e-3``), or is passed verbatim in ``overrides=["learner.lr=1e-3"]``. Python values are
written in Hydra's override syntax (``True`` -> ``true``, ``None`` -> ``null``, lists, dicts).
"""

from __future__ import annotations

import contextlib
import copy
import difflib
import logging
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hydra import compose, initialize_config_module
from hydra.core.hydra_config import HydraConfig
from hydra.errors import HydraException, MissingConfigException
from omegaconf import DictConfig, OmegaConf, open_dict, read_write
from omegaconf.errors import OmegaConfBaseException

from rl_relax.errors import ConfigError, StorageError

log = logging.getLogger("rl_relax")

_PLAIN = re.compile(r"[A-Za-z0-9_.+\-/:]+")  # written unquoted; anything else is quoted


@dataclass(frozen=True)
class TrainResult:
    """What :func:`train_agent` returns: the run's ``summary.json`` content and where the run lives."""

    summary: dict[str, Any]
    run_dir: Path
    config: DictConfig  # the config the run trained with (as in .hydra/config.yaml)


def hydra_value(value: Any) -> str:
    """A Python value in Hydra's override grammar: ``True`` -> ``true``, ``[64, 64]`` -> ``[64,64]``."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, Path):
        value = str(value)
    if isinstance(value, str):
        if _PLAIN.fullmatch(value):
            return value
        return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"
    if isinstance(value, Mapping):
        return "{" + ",".join(f"{k}:{hydra_value(v)}" for k, v in value.items()) + "}"
    if isinstance(value, Sequence):
        return "[" + ",".join(hydra_value(v) for v in value) + "]"
    raise ConfigError(
        f"cannot pass {value!r} ({type(value).__name__}) as a setting. Fix: use str, number, list or dict."
    )


def to_overrides(settings: Mapping[str, Any]) -> list[str]:
    """Keyword settings as Hydra overrides: ``{"learner__lr": 1e-3}`` -> ``["learner.lr=0.001"]``."""
    return [f"{key.replace('__', '.')}={hydra_value(value)}" for key, value in settings.items()]


def compose_config(overrides: Sequence[str] = ()) -> DictConfig:
    """The config ``python -m rl_relax.train <overrides>`` runs with, including Hydra's own node."""
    import rl_relax.config  # noqa: F401  (registers the resolver hydra.run.dir uses)

    try:
        with initialize_config_module("rl_relax.configs", version_base="1.3"):
            return compose("train", overrides=list(overrides), return_hydra_config=True)
    except (HydraException, OmegaConfBaseException) as exc:
        raise _composition_error(exc) from None


def _composition_error(exc: BaseException) -> ConfigError:
    """Hydra's composition errors as one line with the fix (without its ``+key`` hint: a key that
    is not in the config is a typo here, not something to add)."""
    if isinstance(exc, MissingConfigException) and exc.missing_cfg_file and exc.options:
        group, _, name = exc.missing_cfg_file.rpartition("/")
        return ConfigError(f"unknown {group} option {name!r}. Fix: {group}=<one of: {', '.join(exc.options)}>.")
    unknown = re.search(r"Could not override '([^']+)'", str(exc))
    if unknown and "not in struct" in f"{exc} {exc.__cause__}":
        key = unknown.group(1)
        with initialize_config_module("rl_relax.configs", version_base="1.3"):
            known = _leaf_keys(compose("train"))
        close = difflib.get_close_matches(key, known, n=3)
        hint = f" Did you mean {' or '.join(close)}?" if close else ""
        return ConfigError(
            f"unknown setting {key!r}: the config has no such key.{hint} "
            "Fix: check its spelling; every key is documented in configs/train.yaml and configs/env/*.yaml."
        )
    return ConfigError(_one_line(exc) + " Fix: check the setting against configs/train.yaml.")


def _leaf_keys(node: Any, prefix: str = "") -> list[str]:
    """Dotted keys of a config's leaves: ``learner.lr``, ``env.num_envs``, ..."""
    if isinstance(node, DictConfig):
        node = OmegaConf.to_container(node, resolve=False)
    if not isinstance(node, dict) or not node:
        return [prefix]
    return [key for name, child in node.items() for key in _leaf_keys(child, f"{prefix}.{name}" if prefix else name)]


def _one_line(exc: BaseException) -> str:
    """Hydra's multi-line message (and its cause's) as one line."""
    parts = [str(exc)] + ([str(exc.__cause__)] if exc.__cause__ is not None else [])
    text = " ".join(line.strip() for part in parts for line in part.splitlines() if line.strip())
    return text if text.endswith(".") else text + "."


def train_agent(
    env: str | None = None,
    estimator: str | None = None,
    seed: int | None = None,
    *,
    experiment: str | None = None,
    run_dir: str | Path | None = None,
    overrides: Sequence[str] = (),
    verbose: bool = True,
    **settings: Any,
) -> TrainResult:
    """Train (or resume) one run, exactly as ``python -m rl_relax.train`` with the same settings would.

    Args:
        env: env option (``CartPole``, ``LunarLander``, ... as ``env=`` on the command line); default CartPole.
        estimator: ``baseline`` (default), ``lax`` or ``relax``.
        seed: the run's seed (default 0).
        experiment: a ``configs/experiment`` protocol, e.g. ``CartPole_relax``.
        run_dir: the run directory; default ``hydra.run.dir`` (``runs/<run name>/<date_time>``, relative
            to the current directory). An existing run directory resumes from its latest checkpoint.
        overrides: further settings verbatim in Hydra's syntax, e.g. ``["learner.lr=1e-3"]``.
        verbose: show the run's log lines (start, progress, end) on stderr when logging is not configured.
        **settings: any config key, ``__`` for the dot: ``total_timesteps=20000, learner__lr=1e-3``.

    Returns:
        :class:`TrainResult`: ``summary`` (``summary.json``: final return, episodes to solve, ...),
        ``run_dir`` and the ``config``. With ``num_seeds=S`` the summary is ``{"num_seeds": S, "runs":
        [...]}``, each seed's ``summary.json`` from ``run_dir/seed<k>``.

    Raises:
        rl_relax.errors.RlRelaxError: bad settings (unknown key or option, invalid value), a corrupt
            checkpoint in ``run_dir``, a diverged run (``TrainingDivergedError``), ...
    """
    from rl_relax.train import train  # the command line's own entry (keeps `import rl_relax` light)

    chosen = {"env": env, "estimator": estimator, "experiment": experiment, "seed": seed}
    all_overrides = [*to_overrides({k: v for k, v in chosen.items() if v is not None}), *to_overrides(settings)]
    all_overrides += list(overrides)
    if run_dir is not None:
        all_overrides.append(f"hydra.run.dir={hydra_value(Path(run_dir))}")
    cfg = compose_config(all_overrides)
    # As Hydra's own run does: the hydra node goes to HydraConfig (for ${hydra:...} interpolations and
    # code that asks HydraConfig), with the absolute run directory as runtime.output_dir; the task
    # config is the rest.
    HydraConfig.instance().set_config(cfg)
    try:
        directory = Path(str(cfg.hydra.run.dir)).absolute()
    except OmegaConfBaseException as exc:
        raise ConfigError(_one_line(exc) + " Fix: pass run_dir=... .") from None
    with read_write(cfg.hydra.runtime), open_dict(cfg.hydra.runtime):
        cfg.hydra.runtime.output_dir = str(directory)
    HydraConfig.instance().set_config(cfg)
    hydra_node = cfg.hydra
    task = copy.deepcopy(cfg)
    with read_write(task), open_dict(task):
        del task["hydra"]

    meta = directory / ".hydra"
    try:
        meta.mkdir(parents=True, exist_ok=True)
        OmegaConf.save(task, meta / "config.yaml")
        OmegaConf.save(OmegaConf.create({"hydra": hydra_node}), meta / "hydra.yaml")
        OmegaConf.save(OmegaConf.create(list(hydra_node.overrides.task)), meta / "overrides.yaml")
    except OSError as exc:
        raise StorageError(
            f"cannot write the run directory {directory} ({exc.strerror or exc}). Fix: pass a writable run_dir=..."
        ) from None

    with _run_logging(directory / "train.log", verbose):
        summary = train(task, directory, list(hydra_node.overrides.task))
    return TrainResult(summary=summary, run_dir=directory, config=task)


@contextlib.contextmanager
def _run_logging(path: Path, verbose: bool) -> Iterator[None]:
    """The run's log lines go to ``train.log``, as Hydra's job logging does; with ``verbose`` also to
    the application's handlers, or to stderr when it has configured none. Restored afterwards."""
    fmt = logging.Formatter("[%(asctime)s][%(name)s][%(levelname)s] - %(message)s")
    handlers: list[logging.Handler] = [logging.FileHandler(path)]
    if verbose and not logging.getLogger().handlers and not log.handlers:
        handlers.append(logging.StreamHandler())
    level, propagate = log.level, log.propagate
    for handler in handlers:
        handler.setFormatter(fmt)
        log.addHandler(handler)
    log.setLevel(logging.INFO)
    log.propagate = propagate and verbose
    try:
        yield
    finally:
        log.setLevel(level)
        log.propagate = propagate
        for handler in handlers:
            log.removeHandler(handler)
            handler.close()
