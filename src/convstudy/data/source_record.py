"""`Source`: a dataset a user describes, as one frozen record with one canonical spelling. It sits below both the
parsing (`data.sources`) and the decoding (`data.decoders`), which each read it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

ESCAPE = {"%": "%25", ",": "%2C", "|": "%7C", "=": "%3D"}


@dataclass(frozen=True)
class Source:
    """A described dataset; `canonical()` is its one spelling in studies and reports."""

    kind: str
    path: str
    size: tuple[int, int] | None = None
    channels: int | None = None
    classes: tuple[str, ...] | None = None
    resize: bool | None = None  # folder: None = resize iff a size was declared
    test: str | None = None  # csv: a separate test file
    test_fraction: float = 0.2
    split_seed: int = 0
    skip_bad: bool = False

    @property
    def pinned(self) -> bool:
        """Whether shape and classes are known without reading the data."""
        return (self.size is not None and self.channels is not None and self.classes is not None
                and os.path.isabs(self.path) and (self.kind != "folder" or self.resize is not None))

    def canonical(self) -> str:
        """`kind:PATH,key=value,...` with every option spelled out, values %-escaped."""
        parts = [f"{self.kind}:{esc(self.path)}"]
        if self.test is not None:
            parts.append(f"test={esc(self.test)}")
        if self.size is not None:
            parts.append(f"size={self.size[0]}x{self.size[1]}")
        if self.kind == "folder" and self.resize is not None:
            parts.append(f"resize={'yes' if self.resize else 'no'}")
        if self.channels is not None:
            parts.append(f"channels={self.channels}")
        if self.classes is not None:
            parts.append("classes=" + "|".join(esc(c) for c in self.classes))
        if self.kind == "folder" or (self.kind == "csv" and self.test is None):
            parts.append(f"test_fraction={self.test_fraction:g}")
            parts.append(f"split_seed={self.split_seed}")
        if self.kind == "folder":
            parts.append(f"skip_bad={'yes' if self.skip_bad else 'no'}")
        return ",".join(parts)

    def decode_key(self) -> dict[str, Any]:
        """The options that change decoded tensors (labels are checked against classes after decoding)."""
        return {"kind": self.kind, "path": self.path, "test": self.test, "size": self.size, "channels": self.channels,
                "resize": self.resize, "test_fraction": self.test_fraction, "split_seed": self.split_seed,
                "skip_bad": self.skip_bad, "classes": self.classes if self.kind == "folder" else None}


def esc(text: str) -> str:
    """`text` with the characters that separate a compact source string %-escaped."""
    return "".join(ESCAPE.get(ch, ch) for ch in text)


def unesc(text: str) -> str:
    """The inverse of `esc` (either case of hex digits)."""
    for ch, code in sorted(ESCAPE.items(), key=lambda kv: kv[0] == "%"):
        text = text.replace(code, ch).replace(code.lower(), ch)
    return text
