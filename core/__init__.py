"""Impasto inference core: transformation networks, model files, tiled engine, server and CLI."""

__version__ = "0.1.0"
