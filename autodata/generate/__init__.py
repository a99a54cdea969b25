"""The generate stage: Agentic Self-Instruct and the CoT Self-Instruct baseline."""
