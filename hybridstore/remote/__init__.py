"""The registry side: OCI distribution client over the standard library's http.client."""
