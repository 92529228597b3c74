"""mmemb: multimodal short-video embeddings."""

__version__ = "0.1.0"
