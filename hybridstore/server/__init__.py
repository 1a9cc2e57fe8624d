"""A read-only OCI distribution endpoint over layouts."""
