"""Addresses and name resolution."""
