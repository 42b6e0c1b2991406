"""pymesh internals."""
