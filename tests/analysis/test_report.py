import math

import pandas as pd

from analysis.report import markdown_table


def test_markdown_table_shortens_floats_blanks_missing_and_escapes_pipes():
    table = pd.DataFrame({"trial_id": ["a|b", "c"], "val_acc": [0.912345, math.nan], "rank": pd.array([1, None], dtype="Int64")})
    assert markdown_table(table).splitlines() == [
        "| trial_id | val_acc | rank |",
        "| --- | --- | --- |",
        "| a\\|b | 0.9123 | 1 |",
        "| c |  |  |",
    ]
