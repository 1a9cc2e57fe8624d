"""The copy engine over the endpoint protocol, its worker pools, the registry and layout ends."""
