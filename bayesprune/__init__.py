"""bayesprune: train a neural network and prune it at the same time.

Bernoulli gates on every hidden unit get a variational posterior, Gaussian scale-mixture (GSM)
priors sit on the weights, and a flattening hyper-prior makes the objective affine in each gate
probability, so the gates end at exactly 0 or 1. Units whose gate reaches 0 are removed physically
during training.

References:
    Guenter & Sideris, "Robust Learning of Parsimonious Deep Neural Networks", arXiv:2205.04650.
"""

import os as _os

# MKL's single-precision GEMM takes paths that depend on how its buffers happen to be aligned, so
# two processes computing the same product can differ in the last bit: a resumed run then parts
# from the uninterrupted one at rounding level (issue 11; it happened after a merge round had
# changed the allocation history), and runs in one worker process of a benchmark pool depended on
# the runs before them. Conditional Numerical Reproducibility in strict mode makes the result
# independent of alignment. It must be set before MKL's first call; a user's own setting wins.
# Measured (docs/method.md §6v): a dense LeNet-300-100 step 3.51 ms median either way, and a
# run from the command line gives the same numbers as without it.
_os.environ.setdefault("MKL_CBWR", "AUTO,STRICT")

__version__ = "0.1.0"
