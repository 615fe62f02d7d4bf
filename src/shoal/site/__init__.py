"""shoal.site"""
