"""Tests of training/: task layers and recipes on real data."""
