"""Pretraining data: corpora, tokenizers, word boundaries, NSP/SOP pairs, packing,
masking, `prepare` (corpus -> shards) and the tf.data input pipeline. The only
subpackage that imports TensorFlow. Depends on bert_jax.runtime (global arrays)."""
