"""Deployment: a trained trial back as a module, its predictions on image files, and ONNX or safetensors
exports with a model card. The CLI commands `predict` and `export` are thin wrappers."""
