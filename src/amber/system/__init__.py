"""The kernel edge: the only package that issues ioctls, mounts, or runs system tools.

Everything above it (`amber.pool`, `amber.backup`) asks for a clone, a freeze or a loop device
through these small functions and gets `amber.domain.errors` back, never raw `OSError`s or
`CalledProcessError`s.
"""
