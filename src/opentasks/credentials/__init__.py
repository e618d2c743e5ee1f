"""Credentials of dispatched requests: signing keys, OIDC tokens, OAuth bearer tokens."""
