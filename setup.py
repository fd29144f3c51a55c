"""Install with ``pip install -e .`` (add ``[test]`` for the test suite, ``[serve]`` for
``gpt2_simple_plus serve``)."""

from setuptools import find_packages, setup

with open("README.md", encoding="utf-8") as f:
    long_description = f.read()

setup(
    name="gpt2_simple_plus",
    version="0.1.0",
    description="Fine-tune and sample OpenAI's GPT-2 in a few lines, on native TensorFlow 2 "
                "(the successor of gpt-2-simple, same API).",
    long_description=long_description,
    long_description_content_type="text/markdown",
    packages=find_packages(include=["gpt2_simple_plus", "gpt2_simple_plus.*"]),
    package_data={"gpt2_simple_plus": ["data/*", "static/*"]},
    python_requires=">=3.10",
    install_requires=[
        "tensorflow>=2.16",  # tested on 2.21
        "numpy",
        "requests",
        "tqdm",
        "regex",
        # Fast BPE encoding, built offline from encoder.json/vocab.bpe (issue 2).
        "tiktoken>=0.7",
        # Reading Hugging Face checkpoints without a hand-written parser (issue 3).
        "safetensors>=0.4",
        # Byte-level BPE training for from-scratch models (issue 6).
        "tokenizers>=0.15",
    ],
    extras_require={
        "test": [
            "pytest>=7",
            "pytest-xdist>=3",  # tests/pytest.ini runs the suite in two worker processes
            "hypothesis>=6",
            "gpt-2-simple==0.8.1",
            "nbclient>=0.9",
            "nbformat>=5",
            "ipykernel>=6",
            # tests/test_serve.py: the server, the official OpenAI client, a real browser.
            "starlette>=0.37",
            "uvicorn>=0.29",
            "openai>=1.0",
            "selenium>=4.10",
            # export_model(format="transformers") is checked against transformers itself
            # (torch 2.13.0 is the CPU build on the dev machines), and the notebooks plot.
            "transformers>=4.40",
            "torch==2.13.0",
            "matplotlib>=3.5",
            "ai-edge-litert>=2.0",
        ],
        # gpt2_simple_plus serve: the HTTP API and the playground page (issue 17).
        "serve": ["starlette>=0.37", "uvicorn>=0.29"],
        # load_gpt2(quantize="int8"): LiteRT, TensorFlow's runtime with XNNPACK's int8 kernels.
        "lite": ["ai-edge-litert>=2.0"],
        # plot_loss and the notebooks' charts (Colab already has matplotlib).
        "plot": ["matplotlib>=3.5"],
        # The peers measured by benchmarks/ (torch 2.13.0 is the CPU build on the dev machines).
        "bench": ["transformers>=4.40", "keras-hub>=0.20", "torch==2.13.0", "ctranslate2>=4.0",
                  "ai-edge-litert>=2.0"],
    },
    entry_points={"console_scripts": ["gpt2_simple_plus=gpt2_simple_plus.cli:main"]},
    classifiers=[
        "Programming Language :: Python :: 3",
        "License :: OSI Approved :: MIT License",
        "Topic :: Scientific/Engineering :: Artificial Intelligence",
    ],
)
