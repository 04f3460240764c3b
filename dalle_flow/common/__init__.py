"""Helpers shared by every executor: parameters, images, weights, device choice, presets."""
