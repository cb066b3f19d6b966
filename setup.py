from setuptools import find_packages, setup

setup(
    name="zoo",
    version="0.1.0",
    description="A MindSpore-first model zoo of attention vision models with PyTorch twins, "
    "weight conversion and numeric parity tests",
    python_requires=">=3.9",
    packages=find_packages(include=["zoo", "zoo.*"]),
    # Compatible ranges; requirements/lock.txt holds the pins used for development and CI.
    install_requires=[
        "numpy>=1.22,<2",
        "mindspore>=2.3,<2.11",
        "torch>=2.1",
        "safetensors>=0.4",
        "PyYAML>=5.4",
    ],
    extras_require={"mindcv": ["mindcv>=0.3"], "demo": ["scikit-learn>=1.2", "matplotlib>=3.5"],
                    # `zoo export --format onnx`: torch's exporter (onnxscript) and the runtime that checks the file
                    "onnx": ["onnx>=1.17", "onnxscript>=0.3", "onnxruntime>=1.17"],
                    "test": ["pytest>=7", "pytest-xdist>=3", "ruff>=0.6"]},
    entry_points={"console_scripts": ["zoo=zoo.cli:run"]},
)
