"""Everything TensorFlow-specific before serving: data, distribution, training, export."""
