"""The tables each output format draws: one module per kind of result (encoder, decoder, serving, endpoint, ops)
and the engines' feature table and the graph's node and block tables; formats/terminal.py folds them to the
terminal's width or writes them as Markdown."""
