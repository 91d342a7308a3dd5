"""Image descriptors as pure functions of decoded images.

- `lbp`: multi-scale uniform Local Binary Pattern histograms (texture).
- `embedding`: the siamese encoder's L2-normalised global embedding.
"""
