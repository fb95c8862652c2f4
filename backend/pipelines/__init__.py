"""Inference pipelines built from the backend's models (the denoising loops and their VAE helpers)."""
