"""tf.data input pipelines, readers and vocabularies."""
