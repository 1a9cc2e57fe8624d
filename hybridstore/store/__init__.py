"""On-disk storage: the ref-free blob cache and the OCI layouts that link from it."""
