from bert_jax import main

main.run()
