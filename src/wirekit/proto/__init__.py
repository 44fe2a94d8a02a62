"""Sans-I/O protocol cores: bytes and ``now`` in; events, bytes and deadlines out.

Nothing in this package imports asyncio, socket or time.
"""
