"""Tests of zoo/: model code, layers, the family contract."""
