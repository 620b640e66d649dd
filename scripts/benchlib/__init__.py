"""The rows of scripts/bench (its docstring says what each measures)."""
