"""What was measured and how it is kept: the data model (model.py: Result with its repetitions, Run), the SQLite
store (database.py: raw measurements per cell and repetition), the figures derived from them on read
(derive.py), the canonical cell identity (identity.py), the labels every output shares (labels.py) and the
DataFrame view (frame.py)."""
