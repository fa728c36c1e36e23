"""Policy-gradient estimators: the unit that varies between ``estimator=baseline|lax|relax``.

Each estimator is one module here plus one ``configs/estimator/<name>.yaml`` whose ``_target_``
names its class; the learner only sees the :class:`~rl_relax.estimators.base.Estimator` interface.
"""

from rl_relax.estimators.base import Estimator, RolloutBatch

__all__ = ["Estimator", "RolloutBatch"]
