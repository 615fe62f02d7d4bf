"""shoal.provision"""
