"""Data: reading datasets (:mod:`.readers`), the paper's splits (:mod:`.splits`) and tokenised batches
(:mod:`.batching`)."""

from stabletune.data.readers import (PARTIAL_TRAIN, Example, glue_dev_file, load_task_data,
                                     read_glue_tsv, read_records, read_user_examples)
from stabletune.data.splits import DEV_AS_TEST_VALIDATION, PAPER_1K, REGRESSION_BINS, Splits, make_splits

__all__ = ["DEV_AS_TEST_VALIDATION", "PAPER_1K", "PARTIAL_TRAIN", "REGRESSION_BINS", "Example", "Splits",
           "glue_dev_file", "load_task_data", "make_splits", "read_glue_tsv", "read_records", "read_user_examples"]
