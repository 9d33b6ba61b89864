"""Device selection for the torch models: one rule for every model in the pipeline."""

from __future__ import annotations


def resolve_device(device: str = "auto") -> str:
    """``"auto"`` -> ``"cuda"`` when a GPU is usable, else ``"cpu"``; explicit names pass.

    Asking for ``"cuda"`` on a machine without one is an error, not a silent CPU fallback:
    the operator configured a GPU and should know it is not used.
    """
    import torch

    name = (device or "auto").lower()
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise RuntimeError(f"device {device!r} requested but torch.cuda.is_available() is False")
        return "cuda"
    if name == "cpu":
        return "cpu"
    raise ValueError(f"unknown device {device!r}: use auto, cpu or cuda")


def set_torch_threads(threads: int = 0) -> None:
    """Pin torch's intra-op threads (0 = leave torch's default: all cores)."""
    if threads and threads > 0:
        import torch

        torch.set_num_threads(int(threads))
