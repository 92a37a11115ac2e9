"""The entropy bonus's coefficient, fixed or steered to a target entropy (Skywork-OR1's controller)."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass


@dataclass
class EntropyController:
    """The loss subtracts bonus() * token entropy. After each step, update() with the step's
    measured entropy: below `target` the coefficient rises by `delta`, otherwise it falls by
    `delta`, kept in [coef_min, coef_max]; the bonus is on for the next step only if the entropy
    was below the target (Skywork-OR1's EntController, once per RL step).

    A fixed coefficient c is the controller that never moves: EntropyController.fixed(c).
    """

    coef: float
    target: float
    delta: float
    coef_min: float
    coef_max: float
    active: bool = True

    @classmethod
    def fixed(cls, coef: float) -> EntropyController:
        return cls(coef, target=math.inf, delta=0.0, coef_min=coef, coef_max=coef)

    def bonus(self) -> float:
        """The entropy coefficient for this step."""
        return self.coef if self.active else 0.0

    def update(self, entropy: float) -> None:
        below = not entropy >= self.target  # a NaN measurement keeps a fixed bonus on
        self.coef = min(max(self.coef + (self.delta if below else -self.delta), self.coef_min), self.coef_max)
        self.active = below

    def state_dict(self) -> dict:
        return asdict(self)

    def load_state_dict(self, state: dict) -> None:
        for key, value in state.items():
            setattr(self, key, value)
