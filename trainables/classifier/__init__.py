"""The classifier trainable: train an image classifier for up to ``max_epochs``, reporting after every epoch.

``train_classifier(config, data, report)`` is all a caller needs: tests pass ``list.append`` as
``report``; the engine passes one that forwards to Ray Tune together with the epoch's checkpoint.
The data sets are uploaded to the device as tensors, or streamed per batch from the data cache's
memory-mapped shards (``loading`` "stream": trainables/streaming.py); either way each epoch's
shuffling and augmentation are seeded by (seed, epoch), so a resumed trial replays the same batches. Only training batches are augmented (trainables/augment.py); validation, the test
evaluation and predictions see the images as they are (resized to ``image_size`` when set).

Learning-rate schedules: ``constant``; ``cosine`` (per epoch, to 0 at ``max_epochs``); ``plateau``
(ReduceLROnPlateau on the epoch's val_loss); ``onecycle`` (OneCycleLR stepped per optimizer step
over ``max_epochs * steps_per_epoch`` steps, peaking at ``lr``; momentum is not cycled, so a
searched momentum/beta1 keeps its value). ``fit_classifier`` has no validation set: for
``plateau`` it replays the per-epoch ``lr`` the trial recorded (``lr_per_epoch``).

Two-phase fine-tuning (``head_epochs`` > 0): epochs 1..head_epochs train the head alone (the whole
backbone frozen, its BatchNorm in eval mode); from then on the backbone is frozen only up to
``frozen_fraction``. The phase follows from the epoch number, so a trial resumed from a checkpoint
comes back in the phase it was in. The backbone's parameters train at ``lr * backbone_lr_mult``.

On CUDA (the one GPU Ray assigned: it sets CUDA_VISIBLE_DEVICES), training runs in mixed precision
(bfloat16 where it is native, compute capability >= 8.0, else float16 with a gradient scaler:
trainables/gpu.py) and channels-last. Every epoch records ``device``, ``precision``,
``peak_memory_mb`` and ``workers``.
A CUDA out-of-memory error in a training step is not fatal at once: the step's gradients are
dropped and it is redone with half the micro-batch and gradient accumulation, so the optimizer
still steps once on ``batch_size`` images; below ``MIN_MICRO_BATCH`` the trial raises
``TrialInfeasible``. The optimizer's own update is outside that retry (it was not begun when a
micro-batch fails; an out-of-memory error inside it is ``TrialInfeasible``: smaller micro-batches
cannot shrink it, and a half-done update must not be done twice). Validation halves its batch
instead; the data set's upload and the latency measurement that run out of memory make the trial
infeasible, each with a message saying where.

With a process group up (``--workers-per-trial``: search/workers.py), each worker trains on its
stride of every batch and the gradients are averaged over the workers once per step, after every
worker's accumulation succeeded (trainables/distributed.py says why not DDP's backward hooks).

The modules, one job each: config.py (TrialConfig), loop.py (the one epoch loop, shared set-up, PBT
mutation), trial.py (``train_classifier``), refit.py (``fit_classifier``), step.py (micro-batches,
out-of-memory retry), numerics.py (precision, normalisation, upload, evaluation), optim.py
(parameter groups, schedule, loss, mutation of the optimizer's state), model.py (the network and
``Classifier``), memory.py (GPU memory per trial, trials per GPU).
"""

from trainables.classifier.config import LR_SCHEDULES, OPTIMIZERS, PBT_MUTABLE, TrialConfig, check_against_run
from trainables.classifier.memory import measure_step_memory
from trainables.classifier.model import Classifier, build_classifier, load_classifier
from trainables.classifier.refit import fit_classifier
from trainables.classifier.trial import train_classifier

__all__ = [
    "LR_SCHEDULES",
    "OPTIMIZERS",
    "PBT_MUTABLE",
    "Classifier",
    "TrialConfig",
    "build_classifier",
    "check_against_run",
    "fit_classifier",
    "load_classifier",
    "measure_step_memory",
    "train_classifier",
]
