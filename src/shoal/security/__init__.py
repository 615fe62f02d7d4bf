"""shoal.security"""
