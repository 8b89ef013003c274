"""reconciler: converge PHP/Laravel sites on plain-SSH servers to what a Git repository declares."""

__version__ = "0.1.0"
