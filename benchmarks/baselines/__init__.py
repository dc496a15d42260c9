"""Re-implementations of other fine-tuning recipes' data paths, for side-by-side speed measurements."""
