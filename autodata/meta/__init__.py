"""The meta-optimizer (``stage=meta_optimize``): the paper's outer loop that evolves the data scientist's own
harness (editable prompts and task-shaping knobs) under guards against gaming the gap. See ``stage.py``."""
