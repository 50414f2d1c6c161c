"""Losses shared by the methods, one module per family (import from the submodule)."""
