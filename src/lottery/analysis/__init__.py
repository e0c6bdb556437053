"""Analyses of trained networks: distances between subnetworks, linear mode connectivity."""

from lottery.analysis.distance import distances
from lottery.analysis.interpolation import barrier, interpolation_curve

__all__ = ["barrier", "distances", "interpolation_curve"]
