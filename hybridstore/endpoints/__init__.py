"""The two ends of a copy: registries and cache-backed layouts (see ``base``)."""
