"""SavedModel wrappers of the families whose export is theirs alone (TensorFlow)."""
