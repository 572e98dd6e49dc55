"""attnbench: data, model, training, measurement, probes and report for the attention benchmark."""

__version__ = "0.1.0"
