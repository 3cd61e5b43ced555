"""MGLL: multi-granular language learning for medical images (arXiv 2511.15943)."""

__version__ = "0.1.0"
