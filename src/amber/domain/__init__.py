"""Pure types shared by every layer: the error hierarchy, sizes, names, and the rules for
numbers users give (`numbers`: counts, seconds, ratios; `units`: sizes and their 1 PiB limit).

Nothing here performs I/O. Every other package may import from here; this package imports
nothing from Amber.
"""
