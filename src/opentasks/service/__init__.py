"""Use cases: the rules of each RPC, over the store, independent of the wire."""
