"""Fine-tuning tasks: each module reads its file format, featurizes, and defines
its loss, evaluation and predictions."""
