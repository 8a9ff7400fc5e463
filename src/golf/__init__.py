"""GOLF: gradual optimisation learning for conformational energy minimisation."""

__version__ = "0.1.0"
