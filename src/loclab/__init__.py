"""loclab: a lab bench for object-localisation experiments in PyTorch."""

__version__ = "0.1.0"
