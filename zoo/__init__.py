"""The model zoo: pure Keras 3 models (keras.ops / keras.layers only) and their presets."""

__version__ = "0.1.0"
