"""What model code uses at run time: device and dtype choice, checkpoint formats (Flax msgpack, strict state_dicts),
the tiny tokenizer. Plain PyTorch and NumPy: nothing here knows about Documents or Jina."""
