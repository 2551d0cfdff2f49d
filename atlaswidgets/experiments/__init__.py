"""Experiments on a model: patch attacks and their flip-rate tables (``patch``)."""
