"""shoal.server"""
