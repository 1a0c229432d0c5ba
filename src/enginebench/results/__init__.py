"""Results: the data model (Result, Run), the SQLite store, exports and the human-readable report."""
