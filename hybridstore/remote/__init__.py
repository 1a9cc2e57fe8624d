"""The registry side: OCI distribution client over requests."""
