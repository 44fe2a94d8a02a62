"""The messaging hub: engine, store, accounts and its fronts."""
