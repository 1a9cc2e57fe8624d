"""The OCI specs as values and rules: digests, references, media types, documents, schemas,
Helm conventions, platform selection, referrer helpers, document limits, the graph walk."""
