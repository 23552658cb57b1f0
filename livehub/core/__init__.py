"""The connection core: node, client sessions, subscriptions, outbox, channels, auth, cluster, limits.

Everything a client connection is, whatever transport carries it; transports and the FastAPI layer use it.
"""
