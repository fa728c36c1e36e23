"""Policy-gradient estimators: the unit that varies between ``estimator=baseline|lax|relax``.

Each estimator is one module here plus one ``configs/estimator/<name>.yaml`` whose ``_target_``
names its class; the learner only sees the :class:`~rl_relax.estimators.base.Estimator` interface.
What several estimators share has its own module: ``base`` (the interface and the batch),
``control_variate`` (training c_phi on the variance objective: lax, relax, dlax) and
``gumbel_relaxation`` (c_phi on the Gumbel-relaxed discrete action: relax, dlax).
"""

from rl_relax.estimators.base import Estimator, RolloutBatch

__all__ = ["Estimator", "RolloutBatch"]
