"""Pretraining: its loss and step setup (step.py, no TensorFlow), the held-out
evaluation and the loop."""
