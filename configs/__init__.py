"""Experiment configs (each file: `get_config(arg)`), importable as modules by each other."""
