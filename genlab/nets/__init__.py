"""Network builders: plain ``nn.Module``s made from config by partial functions.

One convention for all of them: a builder takes keyword arguments only — ``in_shape`` (one
sample's shape) and the sizes the model supplies, then the layer options from config — and
returns plain modules (a NamedTuple when it builds several). A builder that only works on some
data says so with ``@needs(...)``, which the model adds to its own needs before any data is read.
"""
