"""What executors use around the models: inline images, output Documents, presets, weight files, prompt checks.

The only layer besides `executors/` that may touch DocArray; model packages and pipelines never import it.
"""
