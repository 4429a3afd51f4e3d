"""Task layers: what every family of one task shares (data, losses, metrics, export)."""
