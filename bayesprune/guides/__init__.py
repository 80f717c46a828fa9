"""Variational posteriors over gates and weights."""

from bayesprune.guides.gate_guide import GateGuide
from bayesprune.guides.straight_through import StraightThroughBernoulli

__all__ = ["GateGuide", "StraightThroughBernoulli"]
