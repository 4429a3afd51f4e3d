"""Training recipes: one module per model family, each defining RECIPE."""
