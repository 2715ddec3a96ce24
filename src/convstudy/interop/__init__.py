"""Interop: Keras models in, images to predictions, ONNX and safetensors out, with model cards.

Sits on top of the pipeline (it reads study directories through `convstudy.store` and builds modules
through `convstudy.model`); the CLI commands `import-keras`, `predict` and `export` are thin wrappers.
"""
