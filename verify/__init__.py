"""Verification beyond simulation: formal proofs of ``rtl/`` with yowasp-sby, and mutation
testing of ``rtl/`` against the test suite (``make formal``, ``make mutation``)."""
