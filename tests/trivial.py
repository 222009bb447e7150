"""A trivial trainable for engine tests that are about the engine, not training: it reports one
epoch whose val_acc is the sampled ``x`` (``TRAINABLE = "tests.trivial:constant"``)."""


def constant(config, data, report, checkpoints=None):
    x = float(config["x"])
    report({"epoch": 1, "val_acc": x, "val_loss": 1.0 - x})
