"""Evaluation metrics, the eval stage and the report stage."""
