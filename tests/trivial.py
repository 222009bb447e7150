"""A trivial trainable for engine tests that are about the engine, not training: it reports one
epoch whose val_acc is the sampled ``x`` (``TRAINABLE = "tests.trivial:constant"``)."""


def constant(config, data, report, checkpoints=None):
    x = float(config["x"])
    report({"epoch": 1, "val_acc": x, "val_loss": 1.0 - x})


def live_study(config, data, report, checkpoints=None):
    """As ``constant``, and reports ``live_trials``: how many trials the run's Optuna study
    (``config["study_db"]``, study ``config["study_name"]``) held when this trial started."""
    from pathlib import Path

    import optuna

    path = Path(config["study_db"])
    try:
        seen = len(optuna.load_study(study_name=config["study_name"], storage=f"sqlite:///{path}").trials)
    except KeyError:  # the first trial: no study yet
        seen = 0
    x = float(config["x"])
    report({"epoch": 1, "val_acc": x, "val_loss": 1.0 - x, "live_trials": seen})


def f1_score(config, data, report, checkpoints=None):
    """A trainable with a metric of its own: ``val_f1`` is the sampled ``x`` plus 0.01 per epoch,
    for ``max_epochs`` epochs, and no val_acc or val_loss (``TRAINABLE = "tests.trivial:f1_score"``)."""
    x = float(config["x"])
    for epoch in range(1, int(config["max_epochs"]) + 1):
        report({"epoch": epoch, "val_f1": x + 0.01 * epoch, "train_loss": 1.0 - x})


def epochs(config, data, report, checkpoints=None):
    """``max_epochs`` epochs of ``epoch_s`` seconds' sleep each (default 0): val_acc climbs to ``x``
    at the last epoch. For engine-throughput tests and benchmarks (no training, no checkpoint)."""
    import time

    x, total = float(config["x"]), int(config["max_epochs"])
    for epoch in range(1, total + 1):
        time.sleep(float(config.get("epoch_s", 0.0)))
        value = x * epoch / total
        report({"epoch": epoch, "val_acc": value, "val_loss": 1.0 - value})


def checkpointed(config, data, report, checkpoints=None):
    """As ``epochs``, and each epoch saves its number in the engine's checkpoint store; a restored
    trial goes on from the epoch after the one it loads (for resume tests)."""
    import time

    x, total = float(config["x"]), int(config["max_epochs"])
    state = checkpoints.load() if checkpoints is not None else None
    for epoch in range((state or {"epoch": 0})["epoch"] + 1, total + 1):
        time.sleep(float(config.get("epoch_s", 0.0)))
        if checkpoints is not None:
            checkpoints.save({"epoch": epoch})
        value = x * epoch / total
        report({"epoch": epoch, "val_acc": value, "val_loss": 1.0 - value})
