"""Tools the language model may call: Python functions, MCP servers' tools, the built-in
clock and calculator (run by the server), and tools a client declares (run by the client)."""
