"""Figures of what a masked autoencoder learned: reconstructions, per-block terms, attention,
fusion weights, and training curves. Pure tensor functions live apart from the plotting."""
