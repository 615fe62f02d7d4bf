"""shoal.recipes"""
