"""What every training run shares: mesh and logical-axis shardings, the train state,
the one step skeleton and setup, the optimizer, Orbax checkpoints, metric writers,
profiling, preemption, non-finite handling and FLOP counts. Imports no TensorFlow.
Depends on bert_jax.model."""
