"""The training engine shared by every method: one loop, one run folder, exact resumption.

:func:`train` trains a registered method (:mod:`kp3d.methods`) on a dataset of
:class:`~kp3d.data.schema.Sample`; :func:`load_run` loads the result for inference, evaluation
and reports. Settings: :class:`TrainConfig` (this engine's) and the method's own config class,
each a frozen dataclass that is the single source of its defaults (:mod:`kp3d.config`).

The loop
    AdamW over the model's :meth:`~kp3d.methods.MethodModel.param_groups` (each group's
    learning-rate scale multiplies the schedule; weight decay where the group takes it, by
    default matrices and kernels only), :meth:`~kp3d.methods.MethodModel.on_step` before every
    step (also after a resume), linear warm-up then a constant, cosine or step schedule,
    global gradient-norm clipping, optional EMA of the weights, bf16 autocast where the
    hardware computes bf16 natively, channels-last image tensors. Data come as an
    endless stream of per-epoch reshuffled permutations (:mod:`kp3d.engine.data`), so every
    batch is full. A step whose loss or gradient norm is not finite is skipped and counted;
    after ``max_nonfinite`` in a row the run rolls back to its last checkpoint with the learning
    rate multiplied by ``rollback_lr_factor`` (at most ``max_rollbacks`` times, then it stops
    with an error; the last good checkpoint stays).

Run folder (``RUN/``)
    ==========================================  ================================================
    ``config.json``                             ``format``/``format_version`` of this layout,
                                                ``method``, ``model`` (the resolved method
                                                config), ``train`` (the resolved TrainConfig,
                                                seed included), ``data`` (path, size, format,
                                                number of samples) and ``provenance`` (kp3d,
                                                torch and python versions, git revision when
                                                available, platform, world size, time). Usable
                                                as ``kp3d train --config RUN/config.json``.
    ``model.safetensors``                       the weights to use (the EMA when enabled),
                                                refreshed at every checkpoint and at the end.
    ``checkpoints/step-NNNNNNNN/``              the latest checkpoint: ``model.safetensors``
                                                (training weights) and ``state.pt`` (optimizer
                                                and its group names, EMA, counters: step,
                                                data-stream position, skipped steps,
                                                roll-backs, learning-rate scale,
                                                elapsed time; and the random states of torch,
                                                numpy and python of every rank). Written every
                                                ``ckpt_every`` steps, at step 0 and at the end.
    ``metrics.jsonl``                           one JSON object per ``log_every`` steps:
                                                ``step``, ``loss`` and the method's logged
                                                values averaged over the window, ``grad_norm``,
                                                ``lr``, ``images_per_s``, ``elapsed_s``,
                                                ``skipped``. Read it with :func:`read_metrics`.
    ``events.jsonl``                            what happened when: ``{"step", "event":
                                                "nonfinite" | "rollback", ...}``.
    ``result.json``                             written when the budget is used up: steps,
                                                skipped steps, roll-backs, time, throughput,
                                                final loss; ``diagnostics`` and ``warnings``,
                                                the method's end-of-training check
                                                (:meth:`~kp3d.methods.MethodModel.diagnose`).
    ``tensorboard/``                            only with ``tensorboard=True``.
    ==========================================  ================================================

Nothing is lost
    Every file is written atomically (:mod:`kp3d.engine.atomic`: temporary file in the same
    folder, ``fsync``, ``os.replace``); a checkpoint folder is renamed into place whole, so a
    kill at any moment leaves the previous checkpoint intact. The ``.jsonl`` logs are
    append-only: a kill can tear their last line, which readers skip; a resumed run first cuts
    them back to its checkpoint's step, so they read like one uninterrupted run.

Exact resumption
    ``resume=True`` (``kp3d train --resume``) loads the latest checkpoint, restores the
    optimizer, EMA, counters and every random stream, and restarts the data stream at its
    saved position (the order is a pure function of the seed, so nothing else is needed). With
    a step budget the final weights are bitwise equal to an uninterrupted run's on CPU with the
    same thread count (tested by SIGKILLing a training subprocess). A resumed run may change
    only the budget-like settings (:data:`~kp3d.engine.config.RESUME_MAY_CHANGE`), e.g. train
    longer with a larger ``steps``. Time budgets (``minutes``) and GPU kernels are not
    bitwise reproducible. Ctrl-C or a kill loses at most the steps since the last checkpoint.

Several processes
    Under ``torchrun`` (or ``kp3d train --devices N``) the launcher's environment decides rank
    and world size (:mod:`kp3d.engine.distributed`); see the README section "Training at scale".
"""

from kp3d.engine.atomic import (
    atomic_dir,
    atomic_path,
    atomic_save,
    atomic_write_bytes,
    atomic_write_json,
    atomic_write_text,
)
from kp3d.engine.config import TrainConfig
from kp3d.engine.loop import TrainResult, train
from kp3d.engine.monitor import read_metrics
from kp3d.engine.run import LoadedRun, load_run, read_run_config

__all__ = [
    "LoadedRun",
    "TrainConfig",
    "TrainResult",
    "atomic_dir",
    "atomic_path",
    "atomic_save",
    "atomic_write_bytes",
    "atomic_write_json",
    "atomic_write_text",
    "load_run",
    "read_metrics",
    "read_run_config",
    "train",
]
