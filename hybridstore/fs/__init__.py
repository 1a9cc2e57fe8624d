"""Files on disk: atomic writes and fsync, flock locking (part of the cache protocol),
confined paths."""
