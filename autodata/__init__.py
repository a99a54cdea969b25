"""autodata: synthetic training data at the right difficulty, GRPO training, evaluation."""

__version__ = "0.1.0"
