"""The edge agent on CPython (Raspberry Pi): meters in, signed batches out, nothing lost."""
