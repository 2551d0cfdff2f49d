"""Ready-made worlds and models: ``kitchen`` (the embedded default, shipped with its weights)."""
