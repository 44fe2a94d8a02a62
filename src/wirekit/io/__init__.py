"""The only layer that touches asyncio, uvloop and sockets."""
