"""The cache: capture activations with hooks, keep them as tensors, store them safely on disk."""
