"""Data access: one module per table group, each a dataclass plus async query functions."""
