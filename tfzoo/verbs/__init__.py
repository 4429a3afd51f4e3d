"""The `zoo` verbs that run a trained model: predict, caption, translate, generate, plots."""
