"""Measurement: trained models' inference latency (`convstudy latency`, OUT/latency.json) and the trainer's
training throughput against a plain PyTorch loop (`convstudy bench`)."""
