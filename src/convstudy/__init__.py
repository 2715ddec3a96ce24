"""convstudy: CNN architecture studies you can trust.

`convstudy.run(study, out=..., ...)` and `convstudy.load(OUT)` are the notebook API (convstudy.api);
they are imported on first use, so `import convstudy` stays instant (no torch).
"""

__version__ = "0.1.0"

__all__ = ["__version__", "load", "run"]


def __getattr__(name: str) -> object:  # PEP 562: run and load import on first use
    if name in ("run", "load"):
        from convstudy import api

        return getattr(api, name)
    raise AttributeError(f"module 'convstudy' has no attribute {name!r}")
