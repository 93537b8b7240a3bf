"""Knowledge distillation: a smaller student trained against a frozen teacher, in
the same sharded, checkpointed step as pretraining and fine-tuning."""
