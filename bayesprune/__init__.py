"""bayesprune: train a neural network and prune it at the same time.

Bernoulli gates on every hidden unit get a variational posterior, Gaussian scale-mixture (GSM)
priors sit on the weights, and a flattening hyper-prior makes the objective affine in each gate
probability, so the gates end at exactly 0 or 1. Units whose gate reaches 0 are removed physically
during training.

References:
    Guenter & Sideris, "Robust Learning of Parsimonious Deep Neural Networks", arXiv:2205.04650.
"""

__version__ = "0.1.0"
