"""Training, data preparation and evaluation (needs the ``train`` extra)."""
