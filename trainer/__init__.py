"""Perceptual-loss training of Impasto's style and super-resolution networks (Johnson et al., 2016)."""
