"""shoal.scheduler"""
