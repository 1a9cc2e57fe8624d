"""A project's content as files: ``hybridstore.yaml`` (what), ``hybridstore.lock`` (which
digests), and the Helm dependencies to fill; ``hybridstore.sync`` acts on them."""
