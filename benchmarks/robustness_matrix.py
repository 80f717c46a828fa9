"""P6 robustness matrix: bayesprune against dense across data sizes, batch sizes, learning rates.

Usage::

    .venv/bin/python benchmarks/robustness_matrix.py                 # every cell, 2 seeds
    .venv/bin/python benchmarks/robustness_matrix.py --cells mlp-n3k mlp-n10k --seeds 0

Every cell trains the dense network (plain PyTorch, same network, optimiser, epochs, batch size
and training subset) and bayesprune with the default :class:`TrainConfig`, one process per run
and one thread per process (``--jobs`` processes at a time), and writes
``results/robustness_matrix.json`` (``{"cells": [{"case", "seed", "dense", "bayesprune"}, ...],
"checks": ...}``) and its table in ``README.md``. ``--set key=value`` overrides a
:class:`TrainConfig` field for the bayesprune runs (experiments; the settings are recorded).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import sys
from concurrent.futures import ProcessPoolExecutor
from dataclasses import fields, replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (  # noqa: E402
    RESULTS,
    commit,
    cpu_model,
    existing_file,
    output_dir,
    render_readme,
    seed_type,
)

from bayesprune.config import TrainConfig, positive  # noqa: E402

FMNIST = {"dataset": "fashion-mnist", "arch": "mlp", "epochs": 10, "batch_size": 100, "lr": 1e-3}
CASES = {
    "mlp-n3k": {**FMNIST, "train_subset": 3_000},
    "mlp-n10k": {**FMNIST, "train_subset": 10_000},
    "mlp-n30k": {**FMNIST, "train_subset": 30_000},
    "mlp-n60k": {**FMNIST},
    "mlp-b32": {**FMNIST, "batch_size": 32},
    "mlp-b256": {**FMNIST, "batch_size": 256},
    "mlp-lr3e-4": {**FMNIST, "lr": 3e-4},
    "mlp-lr3e-3": {**FMNIST, "lr": 3e-3},
    "lenet5-n10k": {**FMNIST, "arch": "lenet5", "train_subset": 10_000},
    "lenet5-n60k": {**FMNIST, "arch": "lenet5"},
    "teacher-300-100": {**FMNIST, "dataset": "teacher", "widths": (300, 100)},
    "teacher-32-16": {**FMNIST, "dataset": "teacher", "widths": (32, 16)},
    # quick cells (no download; the test suite runs them): small teacher subsets, where the
    # pre-issue-9 rule collapsed to 1-1
    "teacher-n1k": {
        **FMNIST,
        "dataset": "teacher",
        "widths": (300, 100),
        "train_subset": 1_000,
        "epochs": 5,
    },
    "teacher-n3k": {
        **FMNIST,
        "dataset": "teacher",
        "widths": (300, 100),
        "train_subset": 3_000,
        "epochs": 3,
    },
}
# settings no issue names (docs/method.md §6e), to see whether the rule holds where nobody tuned
# it: ``--cells`` them by name (``--outside`` runs them all)
OUTSIDE = {
    "out-mlp-n1k": {**FMNIST, "train_subset": 1_000},
    "out-mlp-n5k-b64-lr2e-3": {**FMNIST, "train_subset": 5_000, "batch_size": 64, "lr": 2e-3},
    "out-mlp-3ep-b512-lr1e-2": {**FMNIST, "epochs": 3, "batch_size": 512, "lr": 1e-2},
    "out-mlp3-n20k-5ep": {**FMNIST, "widths": (500, 300, 100), "train_subset": 20_000,
                          "epochs": 5},
    "out-mlp-100-50-20ep": {**FMNIST, "widths": (100, 50), "epochs": 20},
    "out-lenet5-n3k": {**FMNIST, "arch": "lenet5", "train_subset": 3_000},
    # a second set, chosen the same way (session of 2026-12-01)
    "out-mlp-1000-300-n10k": {**FMNIST, "widths": (1000, 300), "train_subset": 10_000},
    "out-mlp-n20k-b50-lr5e-4-8ep": {**FMNIST, "train_subset": 20_000, "batch_size": 50,
                                    "lr": 5e-4, "epochs": 8},
    "out-mlp-n2k-30ep": {**FMNIST, "train_subset": 2_000, "epochs": 30},
    "out-lenet5-n30k-b64-5ep": {**FMNIST, "arch": "lenet5", "train_subset": 30_000,
                                "batch_size": 64, "epochs": 5},
    "out-teacher-n5k-b32": {**FMNIST, "dataset": "teacher", "widths": (300, 100),
                            "train_subset": 5_000, "batch_size": 32},
    # a third set, after Eq. (10n) (session of 2026-12-01): below one window of examples
    "out-lenet5-n1k": {**FMNIST, "arch": "lenet5", "train_subset": 1_000},
    "out-mlp-n500-20ep": {**FMNIST, "train_subset": 500, "epochs": 20},
    "out-mlp-n5k-b16-5ep": {**FMNIST, "train_subset": 5_000, "batch_size": 16, "epochs": 5},
    # a fourth set (session of 2026-12-01, third): depths and starting widths not tried before
    "out-mlp-500-n20k": {**FMNIST, "widths": (500,), "train_subset": 20_000},
    "out-mlp4-n30k-5ep": {**FMNIST, "widths": (256, 256, 256, 256), "train_subset": 30_000,
                          "epochs": 5},
    "out-mlp-50-50": {**FMNIST, "widths": (50, 50)},
    "out-lenet5-n10k-b32-5ep": {**FMNIST, "arch": "lenet5", "train_subset": 10_000,
                                "batch_size": 32, "epochs": 5},
    "out-mlp-b32-lr3e-4": {**FMNIST, "batch_size": 32, "lr": 3e-4, "epochs": 5},
    "out-mlp-n10k-2ep": {**FMNIST, "train_subset": 10_000, "epochs": 2},
    # P3's starting width for a convnet (LeNet-5 ×1 is the matrix's lenet5-n10k)
    "out-lenet5-x2-n10k": {**FMNIST, "arch": "lenet5", "width_mult": 2.0, "train_subset": 10_000},
    "out-lenet5-x4-n10k": {**FMNIST, "arch": "lenet5", "width_mult": 4.0, "train_subset": 10_000},
    "out-lenet5-x0.5-n10k": {**FMNIST, "arch": "lenet5", "width_mult": 0.5,
                             "train_subset": 10_000},
    "out-lenet5-x2": {**FMNIST, "arch": "lenet5", "width_mult": 2.0},
    "out-lenet5-x0.5": {**FMNIST, "arch": "lenet5", "width_mult": 0.5},
    # real tabular data, not images (scikit-learn's bundled sets, no download; session of
    # 2026-12-01, fourth): 1,438 / 456 / 143 training examples, 64 / 30 / 13 features
    "out-digits": {**FMNIST, "dataset": "sklearn-digits"},
    "out-digits-50ep": {**FMNIST, "dataset": "sklearn-digits", "epochs": 50},
    "out-cancer-20ep": {**FMNIST, "dataset": "sklearn-breast_cancer", "epochs": 20},
    "out-cancer-100ep": {**FMNIST, "dataset": "sklearn-breast_cancer", "epochs": 100},
    "out-wine-100ep": {**FMNIST, "dataset": "sklearn-wine", "epochs": 100},
    # iris (session of 2026-12-01, seventh): 120 training examples, 4 features, 3 classes
    "out-iris-100ep": {**FMNIST, "dataset": "sklearn-iris", "epochs": 100},
    "out-iris-300ep": {**FMNIST, "dataset": "sklearn-iris", "epochs": 300},
    # P3 for three hidden layers: out-mlp3-n20k-5ep from half and twice its widths
    "out-mlp3-x0.5-n20k-5ep": {**FMNIST, "widths": (500, 300, 100), "width_mult": 0.5,
                               "train_subset": 20_000, "epochs": 5},
    "out-mlp3-x2-n20k-5ep": {**FMNIST, "widths": (500, 300, 100), "width_mult": 2.0,
                             "train_subset": 20_000, "epochs": 5},
    # a fifth set (session of 2026-12-01, fifth): schedules, step counts and data not tried
    "out-mlp-cosine": {**FMNIST, "lr_schedule": "cosine"},
    "out-mlp-b1024-lr3e-3": {**FMNIST, "batch_size": 1024, "lr": 3e-3},
    "out-mlp-n30k-lr1e-4": {**FMNIST, "train_subset": 30_000, "lr": 1e-4},
    "out-mlp6-64-n20k": {**FMNIST, "widths": (64,) * 6, "train_subset": 20_000},
    "out-teacher-1000-500": {**FMNIST, "dataset": "teacher", "widths": (1000, 500)},
    "out-iris-200ep": {**FMNIST, "dataset": "sklearn-iris", "epochs": 200, "batch_size": 16},
    "out-lenet5-n5k-lr3e-3-cosine": {**FMNIST, "arch": "lenet5", "train_subset": 5_000,
                                     "lr": 3e-3, "lr_schedule": "cosine"},
    # large batches, few steps (150 and 90 steps in all)
    "out-mlp-b4096-lr3e-3": {**FMNIST, "batch_size": 4096, "lr": 3e-3},
    "out-teacher-b8192-lr1e-2-30ep": {**FMNIST, "dataset": "teacher", "widths": (300, 100),
                                      "batch_size": 8192, "lr": 1e-2, "epochs": 30},
    # batches above W / 10 = 1,000 examples, where Eq. (10n)'s window used to span < 10 steps
    "out-mlp-n10k-b2000-lr3e-3-30ep": {**FMNIST, "train_subset": 10_000, "batch_size": 2000,
                                       "lr": 3e-3, "epochs": 30},
    "out-teacher-b2048-lr3e-3-20ep": {**FMNIST, "dataset": "teacher", "widths": (300, 100),
                                      "batch_size": 2048, "lr": 3e-3, "epochs": 20},
    "out-digits-fullbatch-lr1e-2-200ep": {**FMNIST, "dataset": "sklearn-digits",
                                          "batch_size": 2048, "lr": 1e-2, "epochs": 200},
    "out-lenet5-b2048-lr3e-3": {**FMNIST, "arch": "lenet5", "batch_size": 2048, "lr": 3e-3},
    "out-mlp-n3k-b1500-lr3e-3-50ep": {**FMNIST, "train_subset": 3_000, "batch_size": 1500,
                                      "lr": 3e-3, "epochs": 50},
    "out-teacher-n2k-fullbatch-lr1e-2-300ep": {**FMNIST, "dataset": "teacher", "widths": (300, 100),
                                               "train_subset": 2_000, "batch_size": 2048,
                                               "lr": 1e-2, "epochs": 300},
    "out-mlp-b2500-20ep": {**FMNIST, "batch_size": 2500, "epochs": 20},
    # the slowest learner of the matrix (lr 3e-4) given twice the epochs, as batch 256 was (§6zf)
    "out-mlp-lr3e-4-20ep": {**FMNIST, "lr": 3e-4, "epochs": 20},
    "out-mlp-b256-20ep": {**FMNIST, "batch_size": 256, "epochs": 20},
    # P3 at a large batch: out-mlp-b4096-lr3e-3 from half and twice its starting widths
    "out-mlp-x0.5-b4096-lr3e-3": {**FMNIST, "width_mult": 0.5, "batch_size": 4096, "lr": 3e-3},
    "out-mlp-x2-b4096-lr3e-3": {**FMNIST, "width_mult": 2.0, "batch_size": 4096, "lr": 3e-3},
    # the ×2 start at the batches between: 256 (a matrix cell) and 1,024 (the floor binds above)
    "out-mlp-x2-b256": {**FMNIST, "width_mult": 2.0, "batch_size": 256},
    "out-mlp-x2-b1024-lr3e-3": {**FMNIST, "width_mult": 2.0, "batch_size": 1024, "lr": 3e-3},
    # training sets a user may bring: noisy labels, rare classes (test sets unchanged)
    "out-mlp-n10k-noise20": {**FMNIST, "train_subset": 10_000, "label_noise": 0.2},
    "out-mlp-noise40": {**FMNIST, "label_noise": 0.4},
    "out-mlp-rare5-10pct": {**FMNIST, "rare_classes": (5, 0.1)},
    # second layers started at or above the width the objective asks for (docs §6n)
    "out-mlp-300-200": {**FMNIST, "widths": (300, 200)},
    "out-mlp-300-400": {**FMNIST, "widths": (300, 400)},
    # LeNet-5 along the matrix's batch and learning-rate axes (the matrix has them for the MLP)
    "out-lenet5-b256": {**FMNIST, "arch": "lenet5", "batch_size": 256},
    "out-lenet5-lr3e-4": {**FMNIST, "arch": "lenet5", "lr": 3e-4},
    "out-lenet5-lr3e-3": {**FMNIST, "arch": "lenet5", "lr": 3e-3},
    "out-lenet5-b32": {**FMNIST, "arch": "lenet5", "batch_size": 32},
    "out-lenet5-noise40": {**FMNIST, "arch": "lenet5", "label_noise": 0.4},
    "out-lenet5-rare5-10pct": {**FMNIST, "arch": "lenet5", "rare_classes": (5, 0.1)},
    # conv2 priced against a narrow consumer from the start (docs/method.md §6q): fc1 100, not 500
    "out-lenet5-fc1-100": {**FMNIST, "arch": "lenet5", "widths": (20, 50, 100)},
    "out-lenet5-fc1-250": {**FMNIST, "arch": "lenet5", "widths": (20, 50, 250)},
    "out-lenet5-fc1-100-n10k": {**FMNIST, "arch": "lenet5", "widths": (20, 50, 100),
                                "train_subset": 10_000},
    # P3 on real tabular data (64 inputs), for group merge moves (docs/method.md §6zb)
    "out-digits-150-50": {**FMNIST, "dataset": "sklearn-digits", "widths": (150, 50)},
    "out-digits-600-200": {**FMNIST, "dataset": "sklearn-digits", "widths": (600, 200)},
    # CIFAR-shaped inputs (3×32×32, 3,072 values; CIFAR-10 is not on this machine): each image
    # padded, tinted by a random colour and buried in pixel noise (docs/method.md §6zc)
    "out-mlp-rgb32-noise-n10k": {**FMNIST, "train_subset": 10_000, "rgb32_noise": 0.5},
    "out-mlp-rgb32-n10k": {**FMNIST, "train_subset": 10_000, "rgb32_noise": 0.0},
    "out-lenet5-rgb32-noise-n10k": {**FMNIST, "arch": "lenet5", "train_subset": 10_000,
                                    "rgb32_noise": 0.5},
    "out-mlp-rgb32-noise": {**FMNIST, "rgb32_noise": 0.5},
    # between and beside the matrix's points, chosen before any of them was run (docs §6zh)
    "out-mlp-n5k": {**FMNIST, "train_subset": 5_000},
    "out-mlp-n20k": {**FMNIST, "train_subset": 20_000},
    "out-mlp-b64": {**FMNIST, "batch_size": 64},
    "out-mlp-b512": {**FMNIST, "batch_size": 512},
    "out-mlp-lr5e-4": {**FMNIST, "lr": 5e-4},
    "out-mlp-lr2e-3": {**FMNIST, "lr": 2e-3},
    "out-mlp-400-150": {**FMNIST, "widths": (400, 150)},
    "out-mlp-n30k-b200-lr2e-3": {**FMNIST, "train_subset": 30_000, "batch_size": 200,
                                 "lr": 2e-3},
    "out-mlp3-400-200-100": {**FMNIST, "widths": (400, 200, 100)},
    "out-lenet5-n20k": {**FMNIST, "arch": "lenet5", "train_subset": 20_000},
    "out-teacher-100-50": {**FMNIST, "dataset": "teacher", "widths": (100, 50)},
    # starting widths no run had used, written down before they ran (docs §6zh)
    "out-mlp-200-200": {**FMNIST, "widths": (200, 200)},
    "out-mlp-500-500": {**FMNIST, "widths": (500, 500)},
    "out-mlp-1000-100": {**FMNIST, "widths": (1000, 100)},
    "out-mlp-150-150-n10k": {**FMNIST, "widths": (150, 150), "train_subset": 10_000},
    "out-lenet5-10-100-200-n10k": {**FMNIST, "arch": "lenet5", "widths": (10, 100, 200),
                                   "train_subset": 10_000},
    # tasks no issue names, derived from Fashion-MNIST, written down before any of them ran
    # (docs §6zl): two-class problems (a hard and an easy pair), five classes, 14×14 images
    "out-mlp-cls0v6": {**FMNIST, "classes": (0, 6)},
    "out-mlp-cls1v8": {**FMNIST, "classes": (1, 8)},
    "out-lenet5-cls0v6": {**FMNIST, "arch": "lenet5", "classes": (0, 6)},
    "out-mlp-cls0-4": {**FMNIST, "classes": (0, 1, 2, 3, 4)},
    "out-mlp-14px": {**FMNIST, "pool": 2},
    "out-mlp-14px-n10k": {**FMNIST, "pool": 2, "train_subset": 10_000},
    # a second batch, written down after the first's results and before any of these ran (§6zl)
    "out-mlp-cls0v6-n1k": {**FMNIST, "classes": (0, 6), "train_subset": 1_000},
    "out-mlp-cls0v6-1000-1000": {**FMNIST, "classes": (0, 6), "widths": (1000, 1000)},
    "out-mlp-cls0-2": {**FMNIST, "classes": (0, 1, 2)},
    "out-mlp-14px-b256": {**FMNIST, "pool": 2, "batch_size": 256},
    # and two for LeNet-5, written down after the second batch's results (§6zl)
    "out-lenet5-cls0-4": {**FMNIST, "arch": "lenet5", "classes": (0, 1, 2, 3, 4)},
    "out-lenet5-x2-cls0v6": {**FMNIST, "arch": "lenet5", "width_mult": 2.0, "classes": (0, 6)},
    # inputs a user did not standardise, written down before they ran (docs §6zm): pixel/255
    # (torchvision's ToTensor) and the raw bytes
    "out-mlp-unit-n10k": {**FMNIST, "scale": "unit", "train_subset": 10_000},
    "out-mlp-raw-n10k": {**FMNIST, "scale": "raw", "train_subset": 10_000},
    "out-lenet5-unit-n10k": {**FMNIST, "arch": "lenet5", "scale": "unit", "train_subset": 10_000},
    "out-mlp-unit": {**FMNIST, "scale": "unit"},
    # five times the epochs (§6zm)
    "out-mlp-50ep": {**FMNIST, "epochs": 50},
    "out-lenet5-n10k-50ep": {**FMNIST, "arch": "lenet5", "train_subset": 10_000, "epochs": 50},
    "out-mlp-n10k-50ep": {**FMNIST, "train_subset": 10_000, "epochs": 50},
    # SGD with heavy-ball momentum 0.9 on the weights instead of Adam, at three rates (§6zq)
    "out-mlp-sgd-lr1e-2": {**FMNIST, "optimizer": "sgd", "lr": 1e-2},
    "out-mlp-sgd-lr3e-2": {**FMNIST, "optimizer": "sgd", "lr": 3e-2},
    "out-mlp-sgd-lr1e-1": {**FMNIST, "optimizer": "sgd", "lr": 1e-1},
    "out-mlp-sgd-lr1e-2-n10k": {**FMNIST, "optimizer": "sgd", "lr": 1e-2, "train_subset": 10_000},
    "out-mlp-sgd-lr3e-2-n10k": {**FMNIST, "optimizer": "sgd", "lr": 3e-2, "train_subset": 10_000},
    "out-mlp-sgd-lr1e-1-n10k": {**FMNIST, "optimizer": "sgd", "lr": 1e-1, "train_subset": 10_000},
    "out-mlp-sgd-lr3e-3": {**FMNIST, "optimizer": "sgd", "lr": 3e-3},
    "out-lenet5-sgd-lr1e-2": {**FMNIST, "arch": "lenet5", "optimizer": "sgd", "lr": 1e-2},
    # LeNet-5's SGD axes, around its 1e-2 cell (session of 2026-12-05, twenty-fifth)
    "out-lenet5-sgd-lr3e-3": {**FMNIST, "arch": "lenet5", "optimizer": "sgd", "lr": 3e-3},
    "out-lenet5-sgd-lr3e-2": {**FMNIST, "arch": "lenet5", "optimizer": "sgd", "lr": 3e-2},
    "out-lenet5-sgd-b32-lr1e-2": {**FMNIST, "arch": "lenet5", "optimizer": "sgd", "lr": 1e-2,
                                  "batch_size": 32},
    "out-lenet5-sgd-b256-lr1e-2": {**FMNIST, "arch": "lenet5", "optimizer": "sgd", "lr": 1e-2,
                                   "batch_size": 256},
    "out-lenet5-sgd-lr1e-1-cosine": {**FMNIST, "arch": "lenet5", "optimizer": "sgd", "lr": 1e-1,
                                     "lr_schedule": "cosine"},
    "out-teacher-sgd-lr3e-2": {**FMNIST, "dataset": "teacher", "widths": (300, 100),
                               "optimizer": "sgd", "lr": 3e-2},
    # sizes, batches, rates and starts between the earlier sets' points, written down with
    # their predictions before any ran (session of 2026-12-06, thirty-fourth; docs §6zza)
    "out-mlp-n15k": {**FMNIST, "train_subset": 15_000},
    "out-mlp-n45k-b128": {**FMNIST, "train_subset": 45_000, "batch_size": 128},
    "out-mlp-b200-lr2e-3": {**FMNIST, "batch_size": 200, "lr": 2e-3},
    "out-mlp-600-200-n30k": {**FMNIST, "widths": (600, 200), "train_subset": 30_000},
    "out-lenet5-n30k": {**FMNIST, "arch": "lenet5", "train_subset": 30_000},
    "out-lenet5-b128-lr2e-3": {**FMNIST, "arch": "lenet5", "batch_size": 128, "lr": 2e-3},
    "out-lenet5-x1.5-n20k": {**FMNIST, "arch": "lenet5", "width_mult": 1.5, "train_subset": 20_000},
    "out-teacher-200-200": {**FMNIST, "dataset": "teacher", "widths": (200, 200)},
    # two cells where the noise temperature T = lr/√B and the weights' travel lr × steps order
    # the expected gaps oppositely (docs §6zza): T of the default with half its travel, and a
    # lower T with the default's travel
    "out-mlp-5ep": {**FMNIST, "epochs": 5},
    "out-mlp-b50-lr5e-4": {**FMNIST, "batch_size": 50, "lr": 5e-4},
    # teachers of other sizes and input counts (``"teacher": (inputs, widths)``, the embedded
    # data's construction, `make_teacher`): does the kept width follow the known answer?
    # (session of 2026-12-06, thirty-fifth; docs §6zzb)
    "out-teacher-t5-3": {**FMNIST, "dataset": "teacher", "widths": (300, 100),
                         "teacher": (4, (5, 3))},
    "out-teacher-t20-10": {**FMNIST, "dataset": "teacher", "widths": (300, 100),
                           "teacher": (4, (20, 10))},
    "out-teacher-t40-20": {**FMNIST, "dataset": "teacher", "widths": (300, 100),
                           "teacher": (4, (40, 20))},
    "out-teacher-in16-t10-5": {**FMNIST, "dataset": "teacher", "widths": (300, 100),
                               "teacher": (16, (10, 5))},
    "out-teacher-in16-t40-20": {**FMNIST, "dataset": "teacher", "widths": (300, 100),
                                "teacher": (16, (40, 20))},
    "out-teacher-t5-3-1000-500": {**FMNIST, "dataset": "teacher", "widths": (1000, 500),
                                  "teacher": (4, (5, 3))},
    "out-teacher-t40-20-1000-500": {**FMNIST, "dataset": "teacher", "widths": (1000, 500),
                                    "teacher": (4, (40, 20))},
    "out-teacher-in16-t10-5-1000-500": {**FMNIST, "dataset": "teacher", "widths": (1000, 500),
                                        "teacher": (16, (10, 5))},
    # P3's proportional starts ×2 and ×4 on the full set (benchmarks/robustness.py's), as
    # cells, for runs under --set overrides
    "out-mlp-600-200": {**FMNIST, "widths": (600, 200)},
    "out-mlp-1200-400": {**FMNIST, "widths": (1200, 400)},
    # P6's batch and learning-rate axes for MLPs whose later layers group moves act on (the
    # default since §6zzc; session of 2026-12-07, thirty-eighth): out-mlp3-400-200-100 and
    # out-mlp-500-500 are their batch-100, lr-1e-3 points
    "out-mlp3-400-200-100-b32": {**FMNIST, "widths": (400, 200, 100), "batch_size": 32},
    "out-mlp3-400-200-100-b256": {**FMNIST, "widths": (400, 200, 100), "batch_size": 256},
    "out-mlp3-400-200-100-lr3e-4": {**FMNIST, "widths": (400, 200, 100), "lr": 3e-4},
    "out-mlp3-400-200-100-lr3e-3": {**FMNIST, "widths": (400, 200, 100), "lr": 3e-3},
    "out-mlp-500-500-b32": {**FMNIST, "widths": (500, 500), "batch_size": 32},
    "out-mlp-500-500-b256": {**FMNIST, "widths": (500, 500), "batch_size": 256},
    "out-mlp-500-500-lr3e-4": {**FMNIST, "widths": (500, 500), "lr": 3e-4},
    "out-mlp-500-500-lr3e-3": {**FMNIST, "widths": (500, 500), "lr": 3e-3},
    # the first layer at lr 3e-4 against its start and its consumer's width
    "out-mlp-400-100-lr3e-4": {**FMNIST, "widths": (400, 100), "lr": 3e-4},
    "out-mlp-300-200-lr3e-4": {**FMNIST, "widths": (300, 200), "lr": 3e-4},
    "out-mlp-600-200-lr3e-4": {**FMNIST, "widths": (600, 200), "lr": 3e-4},
    # eight settings chosen before they ran, with their predictions (forty-fourth session,
    # docs §6zzj): a short run made longer by a smaller batch, sizes and starts between the
    # earlier ones, a teacher of eight inputs, three hidden layers at 10,000 examples
    "out-mlp-n1k-b25": {**FMNIST, "train_subset": 1_000, "batch_size": 25},
    "out-mlp-n7k-b50": {**FMNIST, "train_subset": 7_000, "batch_size": 50},
    "out-lenet5-n5k-b50": {**FMNIST, "arch": "lenet5", "train_subset": 5_000, "batch_size": 50},
    "out-mlp-100": {**FMNIST, "widths": (100,)},
    "out-mlp-1000-1000-n20k-5ep": {**FMNIST, "widths": (1000, 1000), "train_subset": 20_000,
                                   "epochs": 5},
    "out-mlp-3ep-b64": {**FMNIST, "epochs": 3, "batch_size": 64},
    "out-teacher-in8-t10-5": {**FMNIST, "dataset": "teacher", "widths": (300, 100),
                              "teacher": (8, (10, 5))},
    "out-mlp3-200-n10k": {**FMNIST, "widths": (200, 200, 200), "train_subset": 10_000},
}  # fmt: skip
CASES.update(OUTSIDE)
FULL = [
    case
    for case in CASES
    if not case.startswith(("teacher-n1k", "teacher-n3k")) and case not in OUTSIDE
]
# groups whose final widths must agree (coefficient of variation ≤ 20%) or grow with N
SIZE_GROUP = ["mlp-n3k", "mlp-n10k", "mlp-n30k", "mlp-n60k"]
BATCH_GROUP = ["mlp-b32", "mlp-n60k", "mlp-b256"]
LR_GROUP = ["mlp-lr3e-4", "mlp-n60k", "mlp-lr3e-3"]
SUMMARY_KEYS = (
    "arch", "dataset", "seed", "epochs", "initial_widths", "widths", "architecture",
    "test_error", "weights_total", "weights_kept", "weights_kept_fraction", "flops_kept_fraction",
    "gates_binary_fraction", "pruned_early_fraction", "last_prune_epoch", "train_wall_seconds",
    "status", "train_subset", "teacher_widths", "warmup_step", "temperature", "release_steps",
    "undecided_layers", "near_start_layers", "leaving_units", "merged_at_end", "note", "settled",
    "settle_seconds", "before_settle", "settle_skipped", "settle_stopped",
)  # fmt: skip


def sklearn_dataset(name: str):
    """One of scikit-learn's bundled classification sets as a :class:`Dataset`.

    A fixed 80/20 split (the same test set for every seed, as Fashion-MNIST's), features
    standardised with the training part's mean and standard deviation.
    """
    import torch

    from bayesprune.data import Dataset, _safe_std

    try:
        from sklearn import datasets
    except ImportError as err:
        msg = "the sklearn-* cells need scikit-learn (pip install scikit-learn)"
        raise SystemExit(msg) from err
    x, y = getattr(datasets, f"load_{name}")(return_X_y=True)
    x, y = torch.tensor(x, dtype=torch.float32), torch.tensor(y)
    order = torch.randperm(len(x), generator=torch.Generator().manual_seed(1234))
    test, train = order[: len(x) // 5], order[len(x) // 5 :]
    mean, std = x[train].mean(0), _safe_std(x[train].std(0))  # as the image loaders do
    x = (x - mean) / std
    return Dataset(name, x[train], y[train], x[test], y[test], int(y.max()) + 1)


def cell_data(case: str):
    """The cell's dataset (Fashion-MNIST, the teacher or another one, or a scikit-learn set),
    with the cell's label noise or class imbalance applied to its training part."""
    from bayesprune.data import load_dataset

    spec = CASES[case]
    name = spec["dataset"]
    if name.startswith("sklearn-"):
        data = sklearn_dataset(name.removeprefix("sklearn-"))
    elif "teacher" in spec:  # the embedded data's construction with another teacher
        from bayesprune.data import make_teacher

        inputs, widths = spec["teacher"]
        data = make_teacher(in_features=inputs, widths=widths)
    else:
        data = load_dataset(name)
    if "label_noise" in spec:
        data = noisy_labels(data, spec["label_noise"])
    if "rare_classes" in spec:
        data = rare_classes(data, *spec["rare_classes"])
    if "rgb32_noise" in spec:
        data = rgb32(data, spec["rgb32_noise"])
    if "classes" in spec:
        data = class_subset(data, spec["classes"])
    if "pool" in spec:
        data = pooled(data, spec["pool"])
    if "scale" in spec:
        data = unstandardised(data, spec["scale"])
    return data


def class_subset(data, classes: tuple[int, ...]):
    """``data`` restricted to ``classes`` (training and test examples), relabelled 0 … k − 1 in
    the order given: a k-class problem with the same images."""
    import dataclasses

    import torch

    new = torch.full((data.num_classes,), -1, dtype=data.y_train.dtype)
    new[list(classes)] = torch.arange(len(classes), dtype=data.y_train.dtype)
    train, test = new[data.y_train] >= 0, new[data.y_test] >= 0
    return dataclasses.replace(
        data, x_train=data.x_train[train], y_train=new[data.y_train[train]],
        x_test=data.x_test[test], y_test=new[data.y_test[test]], num_classes=len(classes),
        name=f"{data.name}-classes{'-'.join(map(str, classes))}",
    )  # fmt: skip


def pooled(data, factor: int):
    """``data``'s images average-pooled by ``factor`` (28×28 → 14×14 at 2), then standardised
    again with the training images' mean and standard deviation."""
    import torch.nn.functional as F

    x_train, x_test = (F.avg_pool2d(x, factor) for x in (data.x_train, data.x_test))
    return restandardised(data, x_train, x_test, f"{data.name}-pool{factor}")


def restandardised(data, x_train, x_test, name: str):
    """``data`` with new inputs, standardised with the new training inputs' mean and standard
    deviation (one of each over all values), under ``name``."""
    import dataclasses

    mean, std = x_train.mean(), x_train.std()
    return dataclasses.replace(
        data, x_train=(x_train - mean) / std, x_test=(x_test - mean) / std, name=name
    )


def unstandardised(data, scale: str):
    """``data``'s images as a user who skipped standardisation has them: ``"unit"``, pixel/255
    in [0, 1] (torchvision's ``ToTensor``); ``"raw"``, the pixel values in [0, 255]. The loader's
    recorded normalisation is undone (it is a Fashion-MNIST-style loader's)."""
    import dataclasses

    import torch

    norm = data.meta["normalisation"]
    mean, std = (torch.tensor(norm[k]).view(1, -1, 1, 1) for k in ("mean", "std"))
    divisor = {"unit": 255.0, "raw": 1.0}[scale]

    def undo(x):  # the 8-bit pixels again (rounded: the standardisation's float error)
        return (((x * std + mean) * 255).round() / divisor).to(x.dtype)

    meta = {k: v for k, v in data.meta.items() if k != "normalisation"}
    return dataclasses.replace(
        data, x_train=undo(data.x_train), x_test=undo(data.x_test), meta=meta,
        name=f"{data.name}-{scale}",
    )  # fmt: skip


def rgb32(data, noise: float):
    """``data``'s 28×28 images as CIFAR-shaped 3×32×32 ones: zero-padded by 2 pixels, each
    image tinted by its own random colour (channel gains in [0.3, 1]) plus Gaussian pixel noise
    of standard deviation ``noise`` (in the standardised images' units), then standardised
    again; fixed draws, the same in every run, for the training and the test images."""
    import torch

    gen = torch.Generator().manual_seed(4321)

    def colour(x):
        x = torch.nn.functional.pad(x, (2, 2, 2, 2))
        gain = 0.3 + 0.7 * torch.rand(len(x), 3, 1, 1, generator=gen)
        return x * gain + noise * torch.randn(len(x), 3, 32, 32, generator=gen)

    x_train, x_test = colour(data.x_train), colour(data.x_test)
    return restandardised(data, x_train, x_test, f"{data.name}-rgb32-noise{noise:g}")


def noisy_labels(data, fraction: float):
    """``data`` with a fixed random ``fraction`` of its training labels replaced by another
    class, drawn uniformly (the same examples and labels in every run; test labels kept)."""
    import dataclasses

    import torch

    gen = torch.Generator().manual_seed(4321)
    y = data.y_train.clone()
    flip = torch.rand(len(y), generator=gen) < fraction
    other = torch.randint(1, data.num_classes, (len(y),), generator=gen)
    y[flip] = (y[flip] + other[flip]) % data.num_classes
    return dataclasses.replace(data, y_train=y)


def rare_classes(data, first: int, keep: float):
    """``data`` with the training examples of classes ``first`` and above thinned to a fixed
    random ``keep`` fraction (a class-imbalanced training set; the test set is unchanged)."""
    import dataclasses

    import torch

    gen = torch.Generator().manual_seed(4321)
    kept = (data.y_train < first) | (torch.rand(len(data.y_train), generator=gen) < keep)
    return dataclasses.replace(data, x_train=data.x_train[kept], y_train=data.y_train[kept])


def cell_network(case: str, seed: int, data, widths: tuple[int, ...] | None = None):
    """The cell's network (or an MLP of ``widths``), initialised after ``torch.manual_seed``."""
    import torch

    from bayesprune.models.network import build_network

    spec = CASES[case]
    torch.manual_seed(seed)
    return build_network(
        spec["arch"], data.in_shape, data.num_classes, widths or spec.get("widths"),
        spec.get("width_mult", 1.0),
    )  # fmt: skip


CELL = "cell"  # training_data's and dense_summary's default subset: the cell's own


def dense_summary(
    case: str, seed: int, data, epochs: int, batch_size: int, lr: float,
    widths: tuple[int, ...] | None = None, schedule: str | None = None,
    optimizer: str | None = None, momentum: float | None = None,
    train_subset: int | None | str = CELL,
) -> dict:  # fmt: skip
    """The dense baseline of a cell: plain PyTorch on the cell's (seeded) training subset, with
    the cell's learning-rate schedule and optimiser unless ``schedule``, ``optimizer`` and
    ``momentum`` say otherwise, and on ``train_subset`` examples where given (a run's
    ``--set train_subset=N``; None: all of them)."""
    from bayesprune.baseline import train_dense

    settings = training_settings(case)
    schedule = settings.get("lr_schedule", "constant") if schedule is None else schedule
    optimizer = settings.get("optimizer", "adam") if optimizer is None else optimizer
    momentum = settings.get("momentum", 0.9) if momentum is None else momentum
    network = cell_network(case, seed, data, widths)
    train = training_data(case, seed, data, train_subset)
    return train_dense(
        network, train, epochs, batch_size, lr, seed, schedule=schedule, optimizer=optimizer,
        momentum=momentum,
    )  # fmt: skip


def dense_of_config(case: str, seed: int, data, config, widths=None) -> dict:
    """:func:`dense_summary` with the whole recipe of a run's ``config`` (the cell's with its
    ``--set`` overrides): epochs, batch, rate, schedule, optimiser and training subset."""
    return dense_summary(
        case, seed, data, config.epochs, config.batch_size, config.lr, widths,
        schedule=config.lr_schedule, optimizer=config.optimizer, momentum=config.momentum,
        train_subset=config.train_subset,
    )  # fmt: skip


def training_data(case: str, seed: int, data, subset: int | None | str = CELL):
    """The cell's training set: its seeded subset of ``data`` where it has one (``subset``: that
    many examples instead, a run's ``--set train_subset=N``; None: all of them)."""
    subset = CASES[case].get("train_subset") if subset == CELL else subset
    return data if subset is None else data.subset(subset, seed=seed)


DENSE_SETTINGS = (
    "epochs", "batch_size", "lr", "lr_schedule", "optimizer", "momentum", "train_subset",
)  # what a dense run reads of --set (train_subset: it trained on the cell's own before)


def dense_recipe(overrides: dict | None) -> dict:
    """The part of a run's ``--set`` overrides its dense run depends on (:func:`run_cell` passes
    only these to :func:`dense_summary`): runs whose overrides agree here share dense runs."""
    return {k: v for k, v in (overrides or {}).items() if k in DENSE_SETTINGS}


NETWORK_KEYS = ("dataset", "arch", "widths", "width_mult", "train_subset", "label_noise",
                "rare_classes", "rgb32_noise", "classes", "pool", "scale",
                "teacher")  # read elsewhere


def training_settings(case: str) -> dict:
    """The cell's TrainConfig settings; a key that is neither one nor a network key is an
    error (a setting the runs would silently ignore)."""
    names = {f.name for f in fields(TrainConfig)}
    spec = {k: v for k, v in CASES[case].items() if k not in NETWORK_KEYS}
    unknown = sorted(set(spec) - names)
    if unknown:
        raise ValueError(f"cell {case}: unknown settings {unknown}")
    return spec


def cell_config(case: str, seed: int, overrides: dict | None = None):
    """The cell's TrainConfig for ``seed``, with ``overrides`` (a run's ``--set``) applied."""
    subset = CASES[case].get("train_subset")
    config = TrainConfig(seed=seed, train_subset=subset, **training_settings(case))
    return replace(config, **(overrides or {}))


def run_cell(case: str, seed: int, overrides: dict, dense: bool) -> dict:
    """Train dense (if asked) and bayesprune for one cell; return their summaries."""
    import torch

    from bayesprune.inference.trainer import Trainer

    torch.set_num_threads(1)
    data = cell_data(case)
    config = cell_config(case, seed, overrides)

    out = {"case": case, "seed": seed, "overrides": overrides}
    if dense:
        summary = dense_of_config(case, seed, data, config)
        out["dense"] = {k: summary[k] for k in SUMMARY_KEYS if k in summary}
    summary = Trainer(cell_network(case, seed, data), data, config).fit(progress=False)
    out["bayesprune"] = {k: summary[k] for k in SUMMARY_KEYS if k in summary}
    print(
        f"{case} seed {seed}: widths {summary['widths']} error {summary['test_error']:.4f}"
        + (f" (dense {out['dense']['test_error']:.4f})" if dense else ""),
        flush=True,
    )
    return out


def cv(values: list[float]) -> float:
    mean = sum(values) / len(values)
    return math.sqrt(sum((v - mean) ** 2 for v in values) / len(values)) / mean


def non_decreasing(widths: list[list[float]]) -> bool:
    """Whether each layer's width keeps at least 90% of the previous point's, point by point
    (issue 9: widths non-decreasing in N, 10% tolerance)."""
    return all(
        later[i] >= 0.9 * earlier[i]
        for earlier, later in zip(widths[:-1], widths[1:], strict=True)
        for i in range(len(earlier))
    )


def mean_widths(cells: list[dict], case: str) -> list[float] | None:
    runs = [c["bayesprune"]["widths"] for c in cells if c["case"] == case]
    if not runs:
        return None
    return [sum(w[i] for w in runs) / len(runs) for i in range(len(runs[0]))]


def checks(cells: list[dict]) -> dict:
    """The issue's targets, evaluated on the cells present (means over seeds)."""
    out: dict = {"collapsed": [f"{c['case']}/{c['seed']}" for c in cells
                               if c["bayesprune"].get("status") != "finished"]}  # fmt: skip
    gaps = {}
    for case in dict.fromkeys(c["case"] for c in cells):
        runs = [c for c in cells if c["case"] == case and "dense" in c]
        if runs:
            gap = sum(r["bayesprune"]["test_error"] - r["dense"]["test_error"] for r in runs)
            gaps[case] = 100 * gap / len(runs)
    out["gap_points"] = gaps
    for name, group in (("batch", BATCH_GROUP), ("lr", LR_GROUP)):
        widths = [mean_widths(cells, c) for c in group]
        if all(w is not None for w in widths):
            out[f"{name}_width_cv"] = [cv([w[i] for w in widths]) for i in range(len(widths[0]))]
    widths = [mean_widths(cells, c) for c in SIZE_GROUP]
    if all(w is not None for w in widths):
        out["size_widths"] = widths
        out["size_non_decreasing"] = non_decreasing(widths)
    return out


def parse_overrides(items: list[str]) -> dict:
    """``key=value`` pairs for :class:`TrainConfig` fields (``none``, ints, floats, strings)."""
    types = {f.name: str(f.type) for f in fields(TrainConfig)}
    out = {}
    for item in items:
        key, _, text = item.partition("=")
        if key not in types:
            raise SystemExit(f"--set: {key!r} is not a TrainConfig field")
        value: object = text
        if types[key] == "str":  # a string option: "none" is one of its values (window_cap)
            pass
        elif text.lower() == "none":
            value = None
        else:
            for kind in (int, float):
                try:
                    value = kind(text)
                    break
                except ValueError:
                    continue
        out[key] = value
    return out


def add_overrides_option(parser: argparse.ArgumentParser) -> None:
    """``--set key=value ...``, read by :func:`parse_overrides`; repeatable (``--set a=1 --set
    b=2`` adds up: ``nargs="*"`` alone kept only the last)."""
    parser.add_argument(
        "--set", nargs="*", action="extend", default=[],
        help="TrainConfig overrides key=value (repeatable: --set a=1 --set b=2 or --set a=1 b=2)",
    )  # fmt: skip


class _ListCells(argparse.Action):
    """``--list``: every cell's name and how its recipe differs from LeNet-300-100 on
    Fashion-MNIST for 10 epochs at batch 100 and Adam 1e-3; then exit."""

    def __init__(self, option_strings, dest, cases=None, **kwargs):
        self.cases = cases
        super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS, **kwargs)

    def __call__(self, parser, namespace, values, option_string=None):
        for case, settings in self.cases.items():
            where = "outside" if case in OUTSIDE else "matrix"
            changed = {k: v for k, v in settings.items() if FMNIST.get(k, object()) != v}
            recipe = " ".join(f"{k}={v}" for k, v in changed.items()) or "the base recipe"
            print(f"{case:<34} {where:<8} {recipe}")
        parser.exit()


def add_cells_option(parser: argparse.ArgumentParser, default, cases=None, single=False) -> None:
    """``--cells CELL ...`` (``--case CELL`` with ``single``) of ``cases`` (default
    :data:`CASES`), and ``--list`` to print them: the choices themselves, over 150 names, made
    ``--help`` unreadable printed in full."""
    cases = CASES if cases is None else cases
    shown = default if single else " ".join(default) if len(default) < 6 else "the matrix's cells"

    def cell(name: str) -> str:
        if name not in cases:
            raise argparse.ArgumentTypeError(f"no cell {name!r} (--list prints them)")
        return name

    parser.add_argument(
        "--case" if single else "--cells", nargs=None if single else "+", default=default,
        type=cell, metavar="CELL",
        help=f"{'the cell' if single else 'cells'} to run (default: {shown}); --list prints "
        "every cell's recipe",
    )  # fmt: skip
    parser.add_argument(
        "--list", action=_ListCells, cases=cases, help="print every cell and its recipe, and exit"
    )


def arg_parser() -> argparse.ArgumentParser:
    """The command line of :func:`main`."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_cells_option(parser, FULL)
    parser.add_argument(
        "--outside", action="store_true", help="the settings outside the matrix (§6e) instead"
    )
    parser.add_argument("--seeds", nargs="+", type=seed_type, default=[0, 1])
    parser.add_argument(
        "--jobs", type=positive(int), default=2, help="processes at a time (1 thread each)"
    )
    add_overrides_option(parser)
    parser.add_argument("--no-dense", action="store_true", help="skip the dense runs")
    parser.add_argument(
        "--dense-from", default=None, type=existing_file,
        help="take the dense runs from this matrix JSON (the dense recipe does not depend on "
        "bayesprune's settings) instead of running them again",
    )  # fmt: skip
    parser.add_argument("--name", default="robustness_matrix", help="results/<name>.json")
    parser.add_argument("--results-dir", default=None, help="write the JSON there instead")
    return parser


def main(argv: list[str] | None = None) -> None:
    parser = arg_parser()
    args = parser.parse_args(argv)
    if args.outside:
        if args.cells is not FULL:  # --cells given too: it would be dropped without a word
            parser.error("--outside runs every cell outside the matrix: name cells with --cells")
        args.cells = list(OUTSIDE)
    overrides = parse_overrides(args.set)
    for case in args.cells:  # each cell's config checked now (a value TrainConfig refuses
        try:  # failed in a worker, after other cells had run, and lost them)
            cell_config(case, args.seeds[0] if args.seeds else 0, overrides)
        except (TypeError, ValueError) as err:
            parser.error(f"--set: {err}")
    started_at = commit()  # the code the runs import, whatever is committed while they run
    dense_from = None
    if args.dense_from is not None:
        previous = json.loads(Path(args.dense_from).read_text())
        dense_from = {
            (c["case"], c["seed"]): c["dense"]
            for c in previous.get("cells", [])
            if c.get("dense") and dense_recipe(c.get("overrides")) == dense_recipe(overrides)
        }
        wanted = [(case, seed) for case in args.cells for seed in args.seeds]
        missing = [job for job in wanted if job not in dense_from]
        if missing:
            parser.error(f"--dense-from {args.dense_from} has no dense run for {missing}")
        args.no_dense = True
    needs_sklearn = [c for c in args.cells if CASES[c].get("dataset", "").startswith("sklearn-")]
    if needs_sklearn and importlib.util.find_spec("sklearn") is None:  # before any run, so that
        parser.error(  # no finished cell is lost to a missing extra at the end
            f"cells {needs_sklearn} need scikit-learn (pip install scikit-learn)"
        )
    jobs = [(case, seed) for case in args.cells for seed in args.seeds]
    if args.jobs == 1:  # in this process (tests)
        cells = [run_cell(case, seed, overrides, not args.no_dense) for case, seed in jobs]
    else:
        with ProcessPoolExecutor(max_workers=args.jobs) as pool:
            futures = [
                pool.submit(run_cell, case, seed, overrides, not args.no_dense)
                for case, seed in jobs
            ]
            cells = [f.result() for f in futures]
    if dense_from is not None:
        for cell in cells:
            cell["dense"] = dense_from[(cell["case"], cell["seed"])]
    defaults = TrainConfig()
    result = {
        "commit": started_at,
        "cpu": cpu_model(),
        "threads": 1,
        "overrides": overrides,
        "merge_groups_default": defaults.merge_groups,  # what no override means here
        "group_cap_default": defaults.group_cap,
        "cells": cells,
    }
    if dense_from is not None:
        result["dense_from"] = {"file": str(args.dense_from), "commit": previous.get("commit")}
    result["checks"] = checks(cells)
    print(json.dumps(result["checks"], indent=1))
    folder = output_dir(args.results_dir)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{args.name}.json").write_text(json.dumps(result, indent=2) + "\n")
    if folder.resolve() == RESULTS.resolve():
        render_readme()


if __name__ == "__main__":
    main()
