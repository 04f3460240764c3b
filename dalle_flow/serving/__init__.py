"""What executors use around the models: request parameters, inline images, output Documents, presets, weight files.

The only layer besides `executors/` that may touch DocArray; model packages and pipelines never import it.
"""
