"""shoal.fl"""
