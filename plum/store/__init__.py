from plum.store.base import Page, Store

__all__ = ["Page", "Store"]
