"""Example models for both serving stacks, built from code by ``build_models.py``."""
