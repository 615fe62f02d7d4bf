"""shoal.api"""
