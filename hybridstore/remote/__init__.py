"""The registry side: an OCI distribution client on requests (``session.py``), which is
imported only when a command first talks to a registry; our own redirect, retry, resume
and auth policies on top (``transport.py``, ``repository.py``, ``auth.py``)."""
