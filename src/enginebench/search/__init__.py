"""`enginebench tune`: the fastest faithful configuration under a time budget, by successive halving.

space.py lists the candidates (engines × precisions × threading × batch × the engines' own options), halving.py
ranks them round by round and sizes each round to the budget, tune.py measures the rounds through the API."""
