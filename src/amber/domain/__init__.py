"""Pure types shared by every layer: the error hierarchy, sizes, names.

Nothing here performs I/O. Every other package may import from here; this package imports
nothing from Amber.
"""
