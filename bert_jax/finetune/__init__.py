"""Fine-tuning: the task loss and logits (step.py), features and batches, the tasks
(classification, tagging, qa) and the loop with `predict`."""
