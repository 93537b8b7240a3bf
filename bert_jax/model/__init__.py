"""The network: BERT (embeddings, post-LN encoder, tied MLM head, NSP head), its
attention, matmuls and dropout, and the fine-tuning task model. Depends on nothing
else in bert_jax."""
