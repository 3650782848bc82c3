"""Training helpers: precision policy, poly learning rate, callbacks and a resumable `fit`.

Everything here runs through plain `keras.Model.fit`; the helpers only pick the standard Keras
pieces (dtype policies, `PolynomialDecay`, `BackupAndRestore`, `ModelCheckpoint`, `CSVLogger`,
`TensorBoard`) and lay out a run directory so that rerunning the same call after a crash resumes
from the last completed epoch.

- `precision`: `set_precision`, `resolve_precision`, `cpu_supports_bf16`.
- `schedules`: `poly_schedule`, `WarmupPolynomialDecay`.
- `callbacks`: `make_callbacks` (the run directory), `TimeLimit`, `latest_checkpoint`.
- `model_compile`: `compile_model`.
- `resumable_fit`: `fit`.
- `batchnorm`: `set_batchnorm_momentum`.
- `best_model`: `BestModel` (best.keras by a validation metric, optional patience stop).
- `flat_metric`: `FlatMetricWarning`.
- `previews`: `PreviewImages`, `semantic_renderer`, `instance_renderer`.
- `instance_ap`: `InstanceAP` (mask and box AP in the epoch logs).

Run directory layout written by `make_callbacks` / `fit`:

    run_dir/backup/             BackupAndRestore state (weights, optimizer state, epoch counter)
    run_dir/checkpoints/        epoch_001.keras, epoch_002.keras, ... (or last.keras; the newest
                                `keep_checkpoints` only, when given)
    run_dir/history.csv         one row per completed epoch (CSVLogger, appended on resume)
    run_dir/history.png         the curves of history.csv (`history_plot=True`)
    run_dir/best.keras          the best epoch by `monitor`, its value in best.json
    run_dir/previews/           epoch_001.png, ... (`PreviewImages`)
    run_dir/logs/               TensorBoard event files (train/, validation/, previews/)
"""

from kseg.training.batchnorm import set_batchnorm_momentum
from kseg.training.best_model import BestModel
from kseg.training.callbacks import TimeLimit, latest_checkpoint, make_callbacks
from kseg.training.flat_metric import FlatMetricWarning
from kseg.training.instance_ap import InstanceAP
from kseg.training.model_compile import OPTIMIZERS, compile_model
from kseg.training.precision import (
    PRECISION_POLICIES,
    cpu_supports_bf16,
    resolve_precision,
    set_precision,
)
from kseg.training.previews import PreviewImages, instance_renderer, semantic_renderer
from kseg.training.resumable_fit import fit
from kseg.training.schedules import WarmupPolynomialDecay, poly_schedule

__all__ = [
    "OPTIMIZERS",
    "PRECISION_POLICIES",
    "BestModel",
    "FlatMetricWarning",
    "InstanceAP",
    "PreviewImages",
    "TimeLimit",
    "WarmupPolynomialDecay",
    "compile_model",
    "cpu_supports_bf16",
    "fit",
    "instance_renderer",
    "latest_checkpoint",
    "make_callbacks",
    "poly_schedule",
    "resolve_precision",
    "semantic_renderer",
    "set_batchnorm_momentum",
    "set_precision",
]
