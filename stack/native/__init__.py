"""The native stack's parts (standard library only); `stack/nativestack.py` is its command line."""
