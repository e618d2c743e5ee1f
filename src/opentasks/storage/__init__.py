"""Durable storage behind one contract (:class:`opentasks.storage.base.Store`)."""
