import math

import pandas as pd

from analysis.report import _sampled, markdown_table


def test_markdown_table_shortens_floats_blanks_missing_and_escapes_pipes():
    table = pd.DataFrame({"trial_id": ["a|b", "c"], "val_acc": [0.912345, math.nan], "rank": pd.array([1, None], dtype="Int64")})
    assert markdown_table(table).splitlines() == [
        "| trial_id | val_acc | rank |",
        "| --- | --- | --- |",
        "| a\\|b | 0.9123 | 1 |",
        "| c |  |  |",
    ]


def test_the_report_says_when_importance_was_fitted_to_a_sample_and_only_then():
    table = pd.DataFrame({"parameter": ["lr"], "importance": [1.0]})
    table.attrs.update(fitted=1000, scored=10000)
    assert _sampled(table) == ["fANOVA was fitted to a seeded sample of 1,000 of the 10,000 scored trials (analysis/study.py: FANOVA_TRIALS)."]
    table.attrs.update(fitted=40, scored=40)
    assert _sampled(table) == []
    table.attrs.update(fitted=0, scored=1)  # not fitted at all: the table's reasons say why
    assert _sampled(table) == []
