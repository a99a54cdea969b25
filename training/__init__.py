"""GRPO training of the weak model on generated data (stage=train)."""
