"""Search structures that follow the catalog: the visual-word vote store and its vocabulary."""
