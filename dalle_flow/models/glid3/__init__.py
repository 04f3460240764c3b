"""GLID-3 XL: latent diffusion UNet, PLMS sampler, the LDM KL-f8 autoencoder and the LDM BERT text embedder."""
