"""torch and Triton implementations of the oracle's operations."""
