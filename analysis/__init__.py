"""What we learned from a run: ranking and reports, read from the run directory's files alone.

``leaderboard`` ranks the trials; ``study`` exports them as an Optuna study and scores parameter
importance; ``plots`` and ``report`` draw them into ``report.md``; ``retrain`` trains the winners on
train + validation and tests each model once, ``baseline`` beside them a classic logistic regression
on the same split; ``tracking`` logs to MLflow (optional); ``predict`` classifies new images with
the winner.
"""
