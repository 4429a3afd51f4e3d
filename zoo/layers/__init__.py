"""Reusable Keras building blocks shared by model families."""
